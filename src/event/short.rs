//! `Short`: a list that keeps its first `N` items inline, so that the short
//! lists of an audit event (groups, sourceIPs, user.extra, annotations)
//! cost no allocation when decoded. Unlike generic small-vector crates it
//! is covariant in `T`, which borrowed serde types need, and has no unsafe.

use std::fmt;
use std::ops::Deref;

/// Up to `N` items inline, more on the heap.
#[derive(Clone)]
pub enum Short<T, const N: usize> {
    Inline { len: usize, items: [T; N] },
    Heap(Vec<T>),
}

impl<T: Default, const N: usize> Short<T, N> {
    pub fn new() -> Self {
        Short::Inline {
            len: 0,
            items: std::array::from_fn(|_| T::default()),
        }
    }

    pub fn push(&mut self, item: T) {
        match self {
            Short::Inline { len, items } if *len < N => {
                items[*len] = item;
                *len += 1;
            }
            Short::Inline { len, items } => {
                let mut heap = Vec::with_capacity(N * 2);
                heap.extend(items[..*len].iter_mut().map(std::mem::take));
                heap.push(item);
                *self = Short::Heap(heap);
            }
            Short::Heap(v) => v.push(item),
        }
    }

    pub fn into_vec(self) -> Vec<T> {
        match self {
            Short::Inline { len, items } => items.into_iter().take(len).collect(),
            Short::Heap(v) => v,
        }
    }
}

impl<T: Default, const N: usize> Default for Short<T, N> {
    fn default() -> Self {
        Short::new()
    }
}

impl<T, const N: usize> Deref for Short<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Short::Inline { len, items } => &items[..*len],
            Short::Heap(v) => v,
        }
    }
}

impl<T: Default, const N: usize> FromIterator<T> for Short<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = Short::new();
        for item in iter {
            s.push(item);
        }
        s
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Short<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq, const N: usize> PartialEq for Short<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_to_the_heap_past_n_and_keeps_order() {
        let mut s: Short<u32, 2> = Short::new();
        s.push(1);
        s.push(2);
        assert!(matches!(s, Short::Inline { .. }));
        s.push(3);
        assert!(matches!(s, Short::Heap(_)));
        assert_eq!(&s[..], [1, 2, 3]);
        assert_eq!(s.clone().into_vec(), [1, 2, 3]);
        let t: Short<u32, 4> = (0..3).collect();
        assert_eq!(t.into_vec(), [0, 1, 2]);
    }
}
