//! Target files for `targets import` (and the console's import form): one link per line, or a
//! CSV whose first column is the link.

use std::collections::HashSet;
use std::path::Path;

use crate::domain::{LinkError, TargetLink};

/// A target file read line by line.
#[derive(Debug, Default)]
pub struct TargetsFile {
    /// Parsed links with their 1-based line numbers, first occurrence only.
    pub links: Vec<(usize, TargetLink)>,
    /// Lines repeating a link already seen in the file.
    pub duplicate_lines: Vec<usize>,
    /// Lines that are not a link, with the reason.
    pub rejected: Vec<(usize, String, LinkError)>,
    /// Folder links (`t.me/addlist/SLUG`), first occurrence only: expanded into their chats.
    pub folders: Vec<(usize, crate::domain::FolderLink)>,
}

/// Column names that mark a CSV header row.
const HEADERS: &[&str] = &["link", "url", "username", "group", "target"];

/// Reads one link per line, or a CSV whose first column is the link (a header row is skipped).
/// Blank lines and lines starting with `#` are ignored.
pub fn parse_targets(text: &str) -> TargetsFile {
    let mut file = TargetsFile::default();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split([',', ';', '\t']).next().unwrap_or(line).trim().trim_matches('"');
        if line_no == 1 && HEADERS.iter().any(|h| first.eq_ignore_ascii_case(h)) {
            continue;
        }
        if let Some(folder) = crate::domain::FolderLink::parse(first) {
            if file.folders.iter().any(|(_, f)| *f == folder) {
                file.duplicate_lines.push(line_no);
            } else {
                file.folders.push((line_no, folder));
            }
            continue;
        }
        match TargetLink::parse(first) {
            Ok(link) if seen.insert(link.clone()) => file.links.push((line_no, link)),
            Ok(_) => file.duplicate_lines.push(line_no),
            Err(e) => file.rejected.push((line_no, first.to_owned(), e)),
        }
    }
    file
}

/// A rejected line as it may be printed: quoted, except a service link, whose rest can be a
/// login code, a gift code or a proxy secret (the error already names what it is).
pub fn shown_line(text: &str, why: &LinkError) -> String {
    match why {
        LinkError::ServiceLink { .. } => "(line not shown)".to_owned(),
        _ => format!("{text:?}"),
    }
}

/// Reads and parses a targets file.
pub fn read_targets_file(path: &Path) -> std::io::Result<TargetsFile> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_targets(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_with_header_duplicates_and_bad_lines_is_sorted_out_line_by_line() {
        let text = "link,title\n@autobazar_com_ua,Cars\n# comment\n\nhttps://t.me/autobazar_com_ua\nt.me/+AbCd123\nhttps://example.com/x\n\"tg://resolve?domain=cars_kyiv\",x\n";
        let file = parse_targets(text);
        let links: Vec<_> = file.links.iter().map(|(n, l)| (*n, l.to_string())).collect();
        assert_eq!(
            links,
            vec![
                (2, "@autobazar_com_ua".into()),
                (6, "t.me/+AbCd123".into()),
                (8, "@cars_kyiv".into())
            ]
        );
        assert_eq!(file.duplicate_lines, vec![5]);
        assert_eq!(file.rejected.len(), 1);
        assert_eq!(file.rejected[0].0, 7);
        assert!(file.rejected[0].2.to_string().contains("unsupported link host"));
    }

    #[test]
    fn a_rejected_service_link_is_reported_without_its_secret() {
        let file = parse_targets("t.me/login/83920\nhttps://example.com/x\n");
        let shown: Vec<String> =
            file.rejected.iter().map(|(_, text, why)| shown_line(text, why)).collect();
        assert_eq!(shown, ["(line not shown)", "\"https://example.com/x\""]);
        assert!(!file.rejected[0].2.to_string().contains("83920"));
    }

    #[test]
    fn folder_links_are_kept_apart_for_expansion() {
        let file = parse_targets("@cars_kyiv\nhttps://t.me/addlist/AbCdEf\nt.me/addlist/AbCdEf\n");
        assert_eq!(file.links.len(), 1);
        let folders: Vec<String> = file.folders.iter().map(|(_, f)| f.to_string()).collect();
        assert_eq!(folders, ["t.me/addlist/AbCdEf"]);
        assert_eq!(file.duplicate_lines, vec![3]);
        assert!(file.rejected.is_empty());
    }

    #[test]
    fn a_plain_list_needs_no_header() {
        let file = parse_targets("cars_kyiv\n@cars_lviv\r\n");
        assert_eq!(file.links.len(), 2);
        assert!(file.rejected.is_empty());
    }
}
