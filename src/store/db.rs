//! The SQL connection under the store: SQLite (one instance, the embedded
//! default) or PostgreSQL (several instances sharing one database), behind
//! one small API so that every query of the store is written once.
//!
//! What it owns:
//! - [`Conn`]: one connection, with `execute`, `query_row`, `query_map`,
//!   `query_each` and transactions; prepared statements are cached per
//!   connection on both engines;
//! - the dialect bridge: queries are written in SQLite's spelling with
//!   numbered `?N` parameters, which PostgreSQL receives as `$N`; text in
//!   `/*pg:...*/` is a comment to SQLite and SQL to PostgreSQL (e.g.
//!   `FOR UPDATE SKIP LOCKED`); both engines accept the rest as written
//!   (`ON CONFLICT`, `RETURNING`, `COUNT(*) FILTER (WHERE ...)`, quoted
//!   `"user"`);
//! - [`Param`] and [`FromCol`]: values in and out, converted to whatever
//!   column type the server declares (PostgreSQL is strict about `int4`
//!   against `int8`, SQLite is not);
//! - PostgreSQL connections: URLs, TLS (rustls with the web PKI roots, plus
//!   the CA file in `PGSSLROOTCERT`), and a URL with its password hidden for
//!   messages.
//!
//! It leaves the schema to `schema` and every query to the modules that own
//! the tables.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::BytesMut;
use postgres::types::{IsNull, Type};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};

/// The PostgreSQL advisory lock that serialises the store's writers (the
/// chain is appended under it, so instances never fork it).
const WRITE_LOCK: i64 = 0x6b61_7564_6974; // "kaudit"
/// The advisory lock held while the schema is migrated.
const MIGRATE_LOCK: i64 = 0x006b_6175_6469_746d;
/// Prepared statements kept per PostgreSQL connection.
const PG_STATEMENTS: usize = 256;

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A database error, with the server's own words.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// (Not a `source`: the message already says everything the chain
    /// would repeat.)
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    #[error("the query returned no row")]
    NoRow,
    #[error("column {col}: {what}")]
    Column { col: usize, what: String },
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
}

impl DbError {
    /// True when another connection held a lock longer than we wait.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            DbError::Postgres(e) => e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::LOCK_NOT_AVAILABLE
                    || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            }),
            _ => false,
        }
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => e.to_string(),
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        DbError::Postgres(e)
    }
}

/// `.optional()` on a single-row read: no row is `None`, not an error.
pub trait OptionalExt<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExt<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRow) => Ok(None),
            Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One parameter value.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Anything that can be a parameter.
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}
impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}
impl ToParam for i32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for u64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for usize {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}
impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

/// `params![a, b, ...]`: a parameter list for [`Conn`]'s methods.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::db::ToParam]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToParam),+] as &[&dyn $crate::store::db::ToParam]
    };
}
pub(crate) use params;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Null => ToSqlOutput::Owned(Value::Null),
            Param::Int(i) => ToSqlOutput::Owned(Value::Integer(i)),
            Param::Real(f) => ToSqlOutput::Owned(Value::Real(f)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// Text as PostgreSQL stores it: U+0000 becomes U+FFFD.
pub fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                _ if is_text(ty) => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Param::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("a real number cannot be sent as {ty}").into()),
            },
            // PostgreSQL's text cannot hold U+0000 (SQLite's can): an
            // attacker's NUL must not stop the pipeline, so it is stored as
            // U+FFFD (verification compares the same way: `chain`).
            Param::Text(s) if is_text(ty) && s.contains('\0') => {
                pg_text(s).as_ref().to_sql(ty, out)
            }
            Param::Text(s) if is_text(ty) => s.to_sql(ty, out),
            Param::Text(_) => Err(format!("text cannot be sent as {ty}").into()),
            Param::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Param::Blob(_) => Err(format!("bytes cannot be sent as {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One row being read, on either engine.
pub enum Row<'r, 's> {
    Sqlite(&'r rusqlite::Row<'s>),
    Postgres(&'r postgres::Row),
}

impl Row<'_, '_> {
    /// Column `i` as `T` (`Option<T>` for a column that may be NULL).
    pub fn get<T: FromCol>(&self, i: usize) -> Result<T, DbError> {
        match self {
            Row::Sqlite(r) => r
                .get_ref(i)
                .map_err(DbError::Sqlite)
                .and_then(|v| T::from_sqlite(v).map_err(|what| DbError::Column { col: i, what })),
            Row::Postgres(r) => T::from_pg(r, i).map_err(|what| DbError::Column { col: i, what }),
        }
    }
}

/// A column type that can be read: NULL is `None`.
pub trait Column: Sized {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String>;
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String>;
}

/// What [`Row::get`] returns: a [`Column`] type, or an `Option` of one.
pub trait FromCol: Sized {
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String>;
    fn from_pg(r: &postgres::Row, i: usize) -> Result<Self, String>;
}

impl<T: Column> FromCol for T {
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String> {
        T::sqlite(v)?.ok_or_else(|| "is NULL".to_owned())
    }
    fn from_pg(r: &postgres::Row, i: usize) -> Result<Self, String> {
        T::pg(r, i)?.ok_or_else(|| "is NULL".to_owned())
    }
}

impl<T: Column> FromCol for Option<T> {
    fn from_sqlite(v: ValueRef<'_>) -> Result<Self, String> {
        T::sqlite(v)
    }
    fn from_pg(r: &postgres::Row, i: usize) -> Result<Self, String> {
        T::pg(r, i)
    }
}

fn pg_get<'a, T: postgres::types::FromSql<'a>>(
    r: &'a postgres::Row,
    i: usize,
) -> Result<Option<T>, String> {
    r.try_get::<_, Option<T>>(i).map_err(|e| e.to_string())
}

fn pg_type(r: &postgres::Row, i: usize) -> Result<&Type, String> {
    r.columns()
        .get(i)
        .map(|c| c.type_())
        .ok_or_else(|| "no such column".to_owned())
}

impl Column for i64 {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            other => Err(format!("is {}, not an integer", other.data_type())),
        }
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
        match *pg_type(r, i)? {
            Type::INT8 => pg_get::<i64>(r, i),
            Type::INT4 => Ok(pg_get::<i32>(r, i)?.map(i64::from)),
            Type::INT2 => Ok(pg_get::<i16>(r, i)?.map(i64::from)),
            Type::BOOL => Ok(pg_get::<bool>(r, i)?.map(i64::from)),
            ref t => Err(format!("is {t}, not an integer")),
        }
    }
}

macro_rules! narrow_int {
    ($t:ty) => {
        impl Column for $t {
            fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
                i64::sqlite(v)?
                    .map(|i| <$t>::try_from(i).map_err(|e| e.to_string()))
                    .transpose()
            }
            fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
                i64::pg(r, i)?
                    .map(|i| <$t>::try_from(i).map_err(|e| e.to_string()))
                    .transpose()
            }
        }
    };
}
narrow_int!(u64);
narrow_int!(u32);
narrow_int!(i32);
narrow_int!(usize);

impl Column for bool {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
        Ok(i64::sqlite(v)?.map(|i| i != 0))
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
        Ok(i64::pg(r, i)?.map(|i| i != 0))
    }
}

impl Column for f64 {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i as f64)),
            ValueRef::Real(f) => Ok(Some(f)),
            other => Err(format!("is {}, not a number", other.data_type())),
        }
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
        match *pg_type(r, i)? {
            Type::FLOAT8 => pg_get::<f64>(r, i),
            Type::FLOAT4 => Ok(pg_get::<f32>(r, i)?.map(f64::from)),
            _ => Ok(i64::pg(r, i)?.map(|i| i as f64)),
        }
    }
}

impl Column for String {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|s| Some(s.to_owned()))
                .map_err(|e| format!("is not UTF-8: {e}")),
            other => Err(format!("is {}, not text", other.data_type())),
        }
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
        pg_get::<String>(r, i)
    }
}

impl Column for Vec<u8> {
    fn sqlite(v: ValueRef<'_>) -> Result<Option<Self>, String> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b.to_vec())),
            other => Err(format!("is {}, not bytes", other.data_type())),
        }
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Option<Self>, String> {
        pg_get::<Vec<u8>>(r, i)
    }
}

/// How a write transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// A snapshot for reads.
    Read,
    /// The store's writer: SQLite's write lock, PostgreSQL's advisory
    /// write lock (one writer across every instance).
    Write,
    /// A write that does not append to the chain and locks its own rows
    /// (the outbox: `FOR UPDATE SKIP LOCKED`): no store-wide lock on
    /// PostgreSQL.
    RowLocks,
}

/// A PostgreSQL connection and its prepared statements. A connection the
/// server closed (a restart, a failover) is opened again before the next
/// statement, unless it was inside a transaction: that one fails, and is
/// retried whole by its caller.
pub struct Pg {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
    url: String,
    in_tx: bool,
    /// The server ended the session (a restart, `pg_terminate_backend`):
    /// connect again before the next statement outside a transaction.
    broken: bool,
}

/// One connection to the store's database.
pub enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Postgres(_) => "Conn::Postgres",
        })
    }
}

fn sqlite_params<'p>(p: &'p [&dyn ToParam]) -> impl Iterator<Item = Param<'p>> + 'p {
    p.iter().map(|v| v.to_param())
}

impl Pg {
    fn connect(url: &str) -> Result<postgres::Client, DbError> {
        let mut config: postgres::Config = url.parse()?;
        // libpq's variable: the password kept out of the URL (and of `ps`).
        if config.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            config.password(p);
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        // An instance cut off mid-transaction must not hold the write lock
        // until TCP gives up (hours): keepalives notice a dead peer in
        // about a minute, and the server ends a transaction left idle.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        if config.get_ssl_mode() == postgres::config::SslMode::Prefer && !is_local(&config) {
            tracing::warn!(
                store = %redact_url(url),
                "the PostgreSQL connection may fall back to plaintext: add sslmode=require to the URL"
            );
        }
        let mut client = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => config.connect(postgres::NoTls)?,
            _ => config.connect(tls()?)?,
        };
        client.batch_execute(
            "SET idle_in_transaction_session_timeout = '60s'; SET lock_timeout = '300s'",
        )?;
        Ok(client)
    }

    /// The client, connected again if the server closed it outside a
    /// transaction.
    fn client(&mut self) -> Result<&mut postgres::Client, DbError> {
        if (self.broken || self.client.is_closed()) && !self.in_tx {
            tracing::debug!(store = %redact_url(&self.url), "reconnecting to PostgreSQL");
            self.client = Pg::connect(&self.url)?;
            self.statements.clear();
            self.broken = false;
            tracing::info!(store = %redact_url(&self.url), "reconnected to PostgreSQL");
        }
        Ok(&mut self.client)
    }

    /// Notes an error that means the session is gone.
    fn check<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, DbError> {
        if let Err(e) = &r
            && (e.is_closed()
                || e.code().is_some_and(|c| {
                    let c = c.code();
                    c.starts_with("57P") || c.starts_with("08")
                }))
        {
            self.broken = true;
        }
        Ok(r?)
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        // A session opened again has none of the old one's statements.
        self.client()?;
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        let r = self.client()?.prepare(&translated);
        let stmt = self.check(r)?;
        if self.statements.len() >= PG_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

fn pg_params<'p>(p: &'p [Param<'p>]) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Conn {
    /// Which engine this is.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Connects to PostgreSQL at `url` (TLS when the URL's `sslmode` asks
    /// for it or prefers it).
    pub fn postgres(url: &str) -> Result<Conn, DbError> {
        Ok(Conn::Postgres(Box::new(RefCell::new(Pg {
            client: Pg::connect(url)?,
            statements: HashMap::new(),
            url: url.to_owned(),
            in_tx: false,
            broken: false,
        }))))
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, p: &[&dyn ToParam]) -> Result<usize, DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(sqlite_params(p)))?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let stmt = pg.statement(sql)?;
                let values: Vec<Param<'_>> = p.iter().map(|v| v.to_param()).collect();
                let r = pg.client()?.execute(&stmt, &pg_params(&values));
                let n = pg.check(r)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// The first row `sql` returns, read by `f`; [`DbError::NoRow`] when
    /// there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        p: &[&dyn ToParam],
        f: impl FnOnce(&Row<'_, '_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, p, |r| -> Result<bool, DbError> {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        out.ok_or(DbError::NoRow)
    }

    /// Every row `sql` returns, each read by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        p: &[&dyn ToParam],
        mut f: impl FnMut(&Row<'_, '_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.query_each(sql, p, |r| -> Result<bool, DbError> {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Streams the rows `sql` returns through `f` until it returns
    /// `Ok(false)`; rows are not collected (a chain walk over millions of
    /// rows stays in bounded memory). `f` must not use this connection.
    pub fn query_each<E: From<DbError>>(
        &self,
        sql: &str,
        p: &[&dyn ToParam],
        mut f: impl FnMut(&Row<'_, '_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql).map_err(DbError::from)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(sqlite_params(p)))
                    .map_err(DbError::from)?;
                while let Some(r) = rows.next().map_err(DbError::from)? {
                    if !f(&Row::Sqlite(r))? {
                        break;
                    }
                }
                Ok(())
            }
            Conn::Postgres(pg) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut pg = pg.borrow_mut();
                let stmt = pg.statement(sql)?;
                let values: Vec<Param<'_>> = p.iter().map(|v| v.to_param()).collect();
                let mut failed: Option<postgres::Error> = None;
                let outcome = (|| -> Result<(), E> {
                    let mut rows = match pg.client()?.query_raw(&stmt, pg_params(&values)) {
                        Ok(rows) => rows,
                        Err(e) => {
                            failed = Some(e);
                            return Ok(());
                        }
                    };
                    loop {
                        match rows.next() {
                            Ok(Some(r)) => {
                                if !f(&Row::Postgres(&r))? {
                                    // Read what is left of the result: the
                                    // protocol needs the rest first.
                                    while let Ok(Some(_)) = rows.next() {}
                                    return Ok(());
                                }
                            }
                            Ok(None) => return Ok(()),
                            Err(e) => {
                                failed = Some(e);
                                return Ok(());
                            }
                        }
                    }
                })();
                if let Some(e) = failed {
                    pg.check::<()>(Err(e))?;
                }
                outcome
            }
        }
    }

    /// Runs several statements without parameters (schema changes).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let head = sql.trim_start().get(..8).unwrap_or("").to_ascii_uppercase();
                if head.starts_with("BEGIN") {
                    let r = pg.client()?.batch_execute(sql);
                    pg.in_tx = r.is_ok();
                    return pg.check(r);
                }
                if head.starts_with("COMMIT") || head.starts_with("ROLLBACK") {
                    pg.in_tx = false;
                    let r = pg.client.batch_execute(sql);
                    return pg.check(r);
                }
                let r = pg.client()?.batch_execute(sql);
                pg.check(r)
            }
        }
    }

    /// Begins a transaction; end it with [`Conn::commit`] or
    /// [`Conn::rollback`] (or use [`Conn::transaction`]).
    pub fn begin(&self, kind: Begin) -> Result<(), DbError> {
        match (self, kind) {
            (Conn::Sqlite(c), Begin::Read) => Ok(c.execute_batch("BEGIN DEFERRED")?),
            (Conn::Sqlite(c), Begin::Write | Begin::RowLocks) => {
                Ok(c.execute_batch("BEGIN IMMEDIATE")?)
            }
            (Conn::Postgres(_), Begin::Read) => {
                self.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            }
            (Conn::Postgres(_), Begin::RowLocks) => self.execute_batch("BEGIN"),
            (Conn::Postgres(_), Begin::Write) => {
                self.execute_batch("BEGIN")?;
                let locked =
                    self.execute_batch(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"));
                if locked.is_err() {
                    // No half-begun transaction is left behind.
                    let _ = self.rollback();
                }
                locked
            }
        }
    }

    pub fn commit(&self) -> Result<(), DbError> {
        self.execute_batch("COMMIT")
    }

    pub fn rollback(&self) -> Result<(), DbError> {
        self.execute_batch("ROLLBACK")
    }

    /// Runs `f` in one transaction of `kind`: committed when `f` returns
    /// `Ok`, rolled back when it fails.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        kind: Begin,
        f: impl FnOnce(&Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin(kind)?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.commit() {
                    let _ = self.rollback();
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                if let Err(err) = self.rollback() {
                    tracing::warn!(error = %err, "cannot roll back a transaction");
                }
                Err(e)
            }
        }
    }

    /// Holds the migration lock for the rest of the current transaction
    /// (PostgreSQL: instances starting together migrate one at a time).
    pub fn lock_for_migration(&self) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(_) => {
                self.execute_batch(&format!("SELECT pg_advisory_xact_lock({MIGRATE_LOCK})"))
            }
        }
    }

    /// Forgets prepared statements (after a schema change).
    pub fn clear_statements(&self) {
        match self {
            Conn::Sqlite(c) => c.flush_prepared_statement_cache(),
            Conn::Postgres(pg) => pg.borrow_mut().statements.clear(),
        }
    }

    /// Whether the connection still answers (for `/readyz`).
    pub fn is_alive(&self) -> bool {
        match self {
            Conn::Sqlite(c) => c.execute_batch("SELECT 1").is_ok(),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                // Twice: a session found gone is opened again once.
                (0..2).any(|_| {
                    let r = match pg.client() {
                        Ok(c) => c.is_valid(std::time::Duration::from_secs(2)),
                        Err(_) => return false,
                    };
                    pg.check(r).is_ok()
                })
            }
        }
    }
}

/// SQLite's spelling to PostgreSQL's: `?N` → `$N` outside string literals
/// and quoted names, `/*pg:X*/` → `X`.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let b = sql.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            // Copy up to and including the closing quote (ASCII, so the
            // slice ends on a character boundary).
            let end = b[i..]
                .iter()
                .position(|&x| x == q)
                .map_or(b.len(), |p| i + p + 1);
            out.push_str(&sql[i..end]);
            quote = None;
            i = end;
            continue;
        }
        match c {
            b'\'' | b'"' => {
                quote = Some(c);
                out.push(c as char);
                i += 1;
            }
            b'?' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push('$');
                i += 1;
            }
            b'/' if sql[i..].starts_with("/*pg:") => match sql[i..].find("*/") {
                Some(end) => {
                    out.push_str(&sql[i + 5..i + end]);
                    i += end + 2;
                }
                None => {
                    out.push_str(&sql[i..]);
                    i = b.len();
                }
            },
            _ => {
                // Copy one whole UTF-8 character.
                let len = utf8_len(c);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// A PostgreSQL URL with its password replaced by `***`, for messages.
/// The driver takes everything before the first `@` as user and
/// password (a password may hold `/`, `?` or `#`), and so does this.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let mut out = url[..scheme_end + 3].to_owned();
    let tail = match rest.find('@') {
        Some(at) if rest[..at].contains(':') => {
            let colon = rest.find(':').unwrap_or(at);
            out.push_str(&rest[..colon]);
            out.push_str(":***");
            &rest[at..]
        }
        _ => rest,
    };
    // A password given as a query parameter.
    match tail.find("password=") {
        Some(p) => {
            out.push_str(&tail[..p + 9]);
            out.push_str("***");
            if let Some(amp) = tail[p..].find('&') {
                out.push_str(&tail[p + amp..]);
            }
        }
        None => out.push_str(tail),
    }
    out
}

/// Whether the server is on this machine (loopback or a unix socket).
fn is_local(config: &postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => true,
    })
}

/// Whether a `--db` value or storage location names PostgreSQL.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// TLS to PostgreSQL: the web PKI roots, and the CA certificates in the
/// file `PGSSLROOTCERT` names (libpq's variable), e.g. a private CA.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, DbError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os("PGSSLROOTCERT") {
        let certs = CertificateDer::pem_file_iter(&path).map_err(|e| {
            DbError::Tls(format!(
                "PGSSLROOTCERT {}: {e}",
                std::path::Path::new(&path).display()
            ))
        })?;
        for c in certs {
            let c = c.map_err(|e| DbError::Tls(format!("PGSSLROOTCERT: {e}")))?;
            roots
                .add(c)
                .map_err(|e| DbError::Tls(format!("PGSSLROOTCERT: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DbError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?3\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?3\" = $12"
        );
        assert_eq!(
            translate("SELECT id FROM t LIMIT ?1 /*pg:FOR UPDATE SKIP LOCKED*/"),
            "SELECT id FROM t LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        assert_eq!(translate("SELECT 'é?1' || ?1"), "SELECT 'é?1' || $1");
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact_url("postgres://kaudit:s3cret@db.example:5432/kaudit?sslmode=require"),
            "postgres://kaudit:***@db.example:5432/kaudit?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://db/kaudit?user=k&password=s3cret&sslmode=disable"),
            "postgresql://db/kaudit?user=k&password=***&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://k@db/x"), "postgres://k@db/x");
        assert!(!redact_url("postgres://a:p@ss@h/x").contains("p@ss"));
        // The driver reads the password up to the first '@'.
        assert_eq!(
            redact_url("postgres://kaudit:ab/c?d#e@db/kaudit"),
            "postgres://kaudit:***@db/kaudit"
        );
        assert_eq!(
            redact_url("postgres://db/kaudit?user=a@b.example"),
            "postgres://db/kaudit?user=a@b.example"
        );
    }
}
