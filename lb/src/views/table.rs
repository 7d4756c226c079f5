//! Column alignment the way the documents' CLI output is laid out: every column but the last
//! padded to its widest cell plus three spaces, and at least five wide.

/// Minimum width of a padded column, padding included.
const MIN_WIDTH: usize = 5;
/// Spaces after the widest cell of a column.
const PADDING: usize = 3;

/// Renders `rows` (each the same number of cells) as aligned text, one line per row.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns.saturating_sub(1))
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + PADDING)
                .max()
                .unwrap_or(0)
                .max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if let Some(width) = widths.get(c) {
                if c + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_every_column_but_the_last() {
        let rows = vec![
            vec!["ID".into(), "Frontend".into(), "Backend".into()],
            vec!["4".into(), "10.104.239.135:80".into(), "1 => x".into()],
            vec!["".into(), "".into(), "2 => y".into()],
            vec!["6".into(), "192.168.178.29:31940".into(), "".into()],
        ];
        // Widest frontend is 20 characters: the column is 23 wide, as in the documents.
        assert_eq!(
            render(&rows),
            "ID   Frontend               Backend\n\
             4    10.104.239.135:80      1 => x\n\
             \x20                           2 => y\n\
             6    192.168.178.29:31940\n"
        );
    }
}
