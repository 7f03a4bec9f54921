//! Reads user-item-rating-timestamp files: MovieLens `u.data` (tab-separated, no header) and
//! RecBole `.inter` (a header of `name:type` columns, tab-separated).

use thiserror::Error;

/// One rating.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// User id.
    pub user: String,
    /// Item id.
    pub item: String,
    /// Rating as given.
    pub rating: f64,
    /// Timestamp (seconds).
    pub at: u64,
}

/// Why a data file could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum DataError {
    /// A line is malformed.
    #[error("line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Nothing to read.
    #[error("the file holds no ratings")]
    Empty,
}

/// Parses `text`: four whitespace-separated columns (user, item, rating, timestamp); a first
/// line naming typed columns (`user_id:token ...`) is skipped; blank lines are ignored.
pub fn parse(text: &str) -> Result<Vec<Row>, DataError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() || (n == 0 && line.contains(':')) {
            continue;
        }
        let bad = |why: String| DataError::Line { line: line_no, why };
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != 4 {
            return Err(bad(format!(
                "expected 4 columns (user, item, rating, timestamp), found {}",
                cols.len()
            )));
        }
        let rating: f64 = cols[2]
            .parse()
            .map_err(|_| bad(format!("rating {:?} is not a number", cols[2])))?;
        let at: f64 = cols[3]
            .parse()
            .map_err(|_| bad(format!("timestamp {:?} is not a number", cols[3])))?;
        if !rating.is_finite() || !at.is_finite() || at < 0.0 {
            return Err(bad(
                "rating and timestamp must be finite, timestamp >= 0".into()
            ));
        }
        rows.push(Row {
            user: cols[0].to_string(),
            item: cols[1].to_string(),
            rating,
            at: at as u64,
        });
    }
    if rows.is_empty() {
        return Err(DataError::Empty);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_parse_and_bad_lines_say_where() {
        let inter =
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n";
        let udata = "196\t242\t3\t881250949\n\n186\t302\t3\t891717742\n";
        assert_eq!(parse(inter).unwrap().len(), 1);
        let rows = parse(udata).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].item, "302");
        assert_eq!(rows[1].at, 891717742);
        assert_eq!(
            parse("1 2 3\n"),
            Err(DataError::Line {
                line: 1,
                why: "expected 4 columns (user, item, rating, timestamp), found 3".into()
            })
        );
        assert!(matches!(
            parse("1 2 x 4\n"),
            Err(DataError::Line { line: 1, .. })
        ));
        assert_eq!(parse("\n"), Err(DataError::Empty));
    }
}
