//! Plain aligned text tables on standard output.

/// Prints `rows` under `header`, each column as wide as its widest cell.
pub(crate) fn print(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(header, rows));
}

pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up_under_the_widest_cell() {
        let rows = vec![
            vec!["email".to_owned(), "3".to_owned()],
            vec!["webhook".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            super::render(&["CHANNEL", "N"], &rows),
            "CHANNEL  N\nemail    3\nwebhook  12\n"
        );
    }
}
