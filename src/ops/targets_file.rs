//! Target files for `targets import` (and the console's import form): one link per line, or a
//! CSV whose first column is the link.
//!
//! [`TargetsReader`] reads a file line by line (the command line's import streams a file of
//! any size through it in bounded memory); [`parse_targets`] sorts out a text already in memory
//! (the console's form) with the same rules.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use crate::domain::{FolderLink, LinkError, TargetLink};

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
    pub folders: Vec<(usize, FolderLink)>,
}

/// Column names that mark a CSV header row.
const HEADERS: &[&str] = &["link", "url", "username", "group", "target"];

/// What one line of a targets file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Blank, a `#` comment, or the CSV header row.
    Skipped,
    Link(TargetLink),
    /// A folder link seen for the first time in the file.
    Folder(FolderLink),
    /// A folder link the file already had.
    RepeatedFolder,
    /// Not a link: the first column as written, and why.
    Rejected(String, LinkError),
}

/// The rules of one line, given its 1-based number (a header is only looked for on line 1).
/// Whether a link repeats one of an earlier line is the caller's to tell: [`parse_targets`]
/// keeps a set, the streaming import leaves it to the database.
pub fn parse_line(line_no: usize, raw: &str) -> Line {
    let line = raw.trim().trim_start_matches('\u{feff}');
    if line.is_empty() || line.starts_with('#') {
        return Line::Skipped;
    }
    let first = line.split([',', ';', '\t']).next().unwrap_or(line).trim().trim_matches('"');
    if line_no == 1 && HEADERS.iter().any(|h| first.eq_ignore_ascii_case(h)) {
        return Line::Skipped;
    }
    if let Some(folder) = FolderLink::parse(first) {
        return Line::Folder(folder);
    }
    match TargetLink::parse(first) {
        Ok(link) => Line::Link(link),
        Err(e) => Line::Rejected(first.to_owned(), e),
    }
}

/// Reads one link per line, or a CSV whose first column is the link (a header row is skipped).
/// Blank lines and lines starting with `#` are ignored.
pub fn parse_targets(text: &str) -> TargetsFile {
    let mut file = TargetsFile::default();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        match parse_line(line_no, raw) {
            Line::Skipped => {}
            Line::Folder(folder) => {
                if file.folders.iter().any(|(_, f)| *f == folder) {
                    file.duplicate_lines.push(line_no);
                } else {
                    file.folders.push((line_no, folder));
                }
            }
            Line::RepeatedFolder => file.duplicate_lines.push(line_no),
            Line::Link(link) if seen.insert(link.clone()) => file.links.push((line_no, link)),
            Line::Link(_) => file.duplicate_lines.push(line_no),
            Line::Rejected(text, e) => file.rejected.push((line_no, text, e)),
        }
    }
    file
}

/// The longest line kept: a link is far shorter, and a longer line (a file without line
/// breaks, a binary file) is cut here so that memory stays bounded; the cut line is rejected
/// by the link rules like any other.
pub const MAX_LINE_BYTES: usize = 4096;

/// A targets file read one line at a time, in memory bounded by [`MAX_LINE_BYTES`] and the
/// file's folder links (never by its size). Repeated links are not detected here.
pub struct TargetsReader<R> {
    input: R,
    buf: Vec<u8>,
    line_no: usize,
    folders: Vec<FolderLink>,
}

impl TargetsReader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        Ok(Self::new(std::io::BufReader::with_capacity(1 << 16, file)))
    }
}

impl<R: BufRead> TargetsReader<R> {
    pub fn new(input: R) -> Self {
        TargetsReader { input, buf: Vec::new(), line_no: 0, folders: Vec::new() }
    }

    /// The next line with its 1-based number, `None` at the end of the file. A line that is
    /// not UTF-8 text is an error naming its number.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line)>> {
        self.buf.clear();
        let mut cut = false;
        let mut any = false;
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.buf.len());
            if take > room {
                cut = true;
            }
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            self.input.consume(if end { take + 1 } else { take });
            if end {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line_no += 1;
        let text = match std::str::from_utf8(&self.buf) {
            Ok(text) => text,
            // A line cut inside a character keeps its whole characters.
            Err(e) if cut && e.error_len().is_none() => {
                std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or_default()
            }
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {} is not UTF-8 text", self.line_no),
                ));
            }
        };
        let line = match parse_line(self.line_no, text) {
            Line::Folder(folder) if self.folders.contains(&folder) => Line::RepeatedFolder,
            Line::Folder(folder) => {
                self.folders.push(folder.clone());
                Line::Folder(folder)
            }
            other => other,
        };
        Ok(Some((self.line_no, line)))
    }
}

/// A rejected line as it may be printed: quoted, except a service link, whose rest can be a
/// login code, a gift code or a proxy secret (the error already names what it is).
pub fn shown_line(text: &str, why: &LinkError) -> String {
    match why {
        LinkError::ServiceLink { .. } => "(line not shown)".to_owned(),
        _ => format!("{text:?}"),
    }
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

    fn read_all(bytes: &[u8]) -> std::io::Result<Vec<(usize, Line)>> {
        let mut reader = TargetsReader::new(std::io::Cursor::new(bytes.to_vec()));
        let mut out = Vec::new();
        while let Some(line) = reader.next_line()? {
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn the_reader_numbers_lines_as_the_text_parser_does() {
        let text = "link\r\n@cars_kyiv\n\nt.me/addlist/AbCdEf\nhttps://example.com/x\nt.me/addlist/AbCdEf\n@cars_lviv";
        let lines = read_all(text.as_bytes()).unwrap();
        let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(lines[0].1, Line::Skipped);
        assert_eq!(lines[1].1, Line::Link(TargetLink::parse("@cars_kyiv").unwrap()));
        assert!(matches!(lines[3].1, Line::Folder(_)));
        assert!(matches!(&lines[4].1, Line::Rejected(t, _) if t == "https://example.com/x"));
        assert_eq!(lines[5].1, Line::RepeatedFolder);
        assert_eq!(lines[6].1, Line::Link(TargetLink::parse("@cars_lviv").unwrap()));
        let parsed = parse_targets(text);
        assert_eq!(parsed.rejected[0].0, 5);
        assert_eq!(parsed.links.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [2, 7]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named_by_its_number() {
        let err = read_all(b"@cars_kyiv\n@cars_\xff\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2 is not UTF-8 text");
    }

    #[test]
    fn a_line_without_end_is_cut_and_rejected_and_the_next_one_still_read() {
        let mut bytes = vec![b'a'; MAX_LINE_BYTES * 3];
        bytes.extend_from_slice("\u{e9}\n@cars_kyiv\n".as_bytes());
        let lines = read_all(&bytes).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(matches!(&lines[0].1, Line::Rejected(t, _) if t.len() == MAX_LINE_BYTES));
        assert_eq!(lines[1], (2, Line::Link(TargetLink::parse("@cars_kyiv").unwrap())));
    }
}
