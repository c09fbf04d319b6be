//! Telethon `.session` files: the SQLite database Telethon keeps per account, read without
//! SQLite and without ever writing.
//!
//! The file is read into memory with one `read` and parsed per the documented SQLite file
//! format (header, table b-trees, records), so no journal, WAL or lock file can appear beside
//! it, whatever the file system allows. Only the `sessions` table is read, by column name
//! (`dc_id`, `server_address`, `port`, `auth_key`; `takeout_id` and any other column are
//! ignored), so every Telethon schema version that has that table is read the same way.
//!
//! A file with a non-empty `-wal` or `-journal` beside it is refused: the newest state of the
//! session may be in there, and only SQLite can merge it (open the session once with Telethon,
//! or copy it with `sqlite3 FILE .backup COPY`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::session::{AUTH_KEY_LEN, TelethonSession};
use super::session_import::{ImportError, SessionFormat};

fn fail(problem: impl Into<String>) -> ImportError {
    ImportError { format: Some(SessionFormat::TelethonFile), problem: problem.into() }
}

/// Reads the session of a Telethon `.session` file.
pub fn read(path: &Path) -> Result<TelethonSession, ImportError> {
    for suffix in ["-wal", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        if std::fs::metadata(&side).is_ok_and(|m| m.len() > 0) {
            return Err(fail(format!(
                "{} has a {suffix} file beside it holding writes not yet in the file; open the session once with Telethon, or copy it with `sqlite3 FILE .backup COPY`",
                path.display()
            )));
        }
    }
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    parse(&bytes).map_err(|problem| fail(format!("{}: {problem}", path.display())))
}

/// Parses the bytes of a Telethon `.session` file.
pub fn parse(bytes: &[u8]) -> Result<TelethonSession, String> {
    let db = Db::open(bytes)?;
    let Some((root, sql)) = db.table("sessions")? else {
        return Err("not a Telethon session file: it has no sessions table".to_owned());
    };
    let columns = column_names(&sql)?;
    let rows = db.rows(root)?;
    let row = match rows.as_slice() {
        [] => return Err("the sessions table is empty: the account never logged in".to_owned()),
        [row] => row,
        more => return Err(format!("the sessions table holds {} rows, expected one", more.len())),
    };
    let get = |name: &str| -> Result<&Value, String> {
        let (i, col) = columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("the sessions table has no {name} column"))?;
        match row.values.get(i) {
            // The INTEGER PRIMARY KEY is the rowid; SQLite stores NULL in its place.
            Some(Value::Null) | None if col.rowid_alias => Ok(&row.rowid_value),
            Some(v) => Ok(v),
            None => Ok(&Value::Null),
        }
    };
    let dc_id = match get("dc_id")? {
        Value::Int(n) if (1..=255).contains(n) => *n as u8,
        Value::Int(n) => return Err(format!("dc_id {n} is out of range 1..=255")),
        other => return Err(format!("dc_id is {}, expected an integer", other.kind())),
    };
    let address = match get("server_address")? {
        Value::Text(t) => t.trim().to_owned(),
        other => return Err(format!("server_address is {}, expected text", other.kind())),
    };
    let ip: IpAddr =
        address.parse().map_err(|_| format!("server_address {address:?} is not an IP address"))?;
    let port = match get("port")? {
        Value::Int(n) if (1..=65535).contains(n) => *n as u16,
        Value::Int(n) => return Err(format!("port {n} is out of range 1..=65535")),
        other => return Err(format!("port is {}, expected an integer", other.kind())),
    };
    let key: [u8; AUTH_KEY_LEN] = match get("auth_key")? {
        Value::Blob(b) if b.len() == AUTH_KEY_LEN => {
            b.as_slice().try_into().map_err(|_| "the auth key is cut short".to_owned())?
        }
        Value::Null => return Err("auth_key is NULL: the account never logged in".to_owned()),
        Value::Blob(b) => {
            return Err(format!("auth_key has {} bytes, expected {AUTH_KEY_LEN}", b.len()));
        }
        other => return Err(format!("auth_key is {}, expected a blob", other.kind())),
    };
    if key.iter().all(|&b| b == 0) {
        return Err("the auth key is all zeros".to_owned());
    }
    Ok(TelethonSession::new(dc_id, SocketAddr::new(ip, port), key))
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

struct Row {
    rowid_value: Value,
    values: Vec<Value>,
}

struct Column {
    name: String,
    rowid_alias: bool,
}

/// A read-only view of an SQLite database image.
struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
}

/// Tables have at most a few thousand pages here; a deeper walk is a corrupt (cyclic) file.
const MAX_PAGES_WALKED: usize = 100_000;

impl<'a> Db<'a> {
    fn open(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err("not an SQLite database (a Telethon .session file is one)".to_owned());
        }
        let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            n => return Err(format!("bad SQLite page size {n}")),
        };
        let usable = page_size - usize::from(bytes[20]);
        if usable < 480 {
            return Err("bad SQLite reserved space".to_owned());
        }
        Ok(Self { bytes, page_size, usable })
    }

    fn page(&self, n: u32) -> Result<&'a [u8], String> {
        let start = (n as usize)
            .checked_sub(1)
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(|| format!("bad page number {n}"))?;
        self.bytes
            .get(start..start + self.page_size)
            .ok_or_else(|| format!("page {n} is past the end of the file (truncated?)"))
    }

    /// The root page and CREATE statement of table `name`, from sqlite_master.
    fn table(&self, name: &str) -> Result<Option<(u32, String)>, String> {
        for row in self.rows(1)? {
            let is_table = matches!(row.values.first(), Some(Value::Text(t)) if t == "table");
            let named =
                matches!(row.values.get(1), Some(Value::Text(t)) if t.eq_ignore_ascii_case(name));
            if is_table && named {
                let root = match row.values.get(3) {
                    Some(Value::Int(n)) if *n > 0 => *n as u32,
                    _ => return Err(format!("table {name} has no root page")),
                };
                let sql = match row.values.get(4) {
                    Some(Value::Text(t)) => t.clone(),
                    _ => return Err(format!("table {name} has no CREATE statement")),
                };
                return Ok(Some((root, sql)));
            }
        }
        Ok(None)
    }

    /// Every row of the table b-tree rooted at `root`, in rowid order.
    fn rows(&self, root: u32) -> Result<Vec<Row>, String> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut walked = 0;
        while let Some(n) = stack.pop() {
            walked += 1;
            if walked > MAX_PAGES_WALKED {
                return Err("the table b-tree loops (corrupt file)".to_owned());
            }
            let page = self.page(n)?;
            let at = if n == 1 { 100 } else { 0 };
            let header = page.get(at..at + 12).ok_or("page header cut short")?;
            let cells = usize::from(u16::from_be_bytes([header[3], header[4]]));
            match header[0] {
                0x0D => {
                    for i in 0..cells {
                        let cell = cell_offset(page, at + 8, i)?;
                        out.push(self.leaf_cell(page, cell)?);
                    }
                }
                0x05 => {
                    // Children right to left on the stack, so rows come out in order.
                    let right = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
                    stack.push(right);
                    for i in (0..cells).rev() {
                        let cell = cell_offset(page, at + 12, i)?;
                        let child = page.get(cell..cell + 4).ok_or("cell cut short")?;
                        stack.push(u32::from_be_bytes([child[0], child[1], child[2], child[3]]));
                    }
                }
                t => return Err(format!("page {n} is not a table b-tree page (type {t:#x})")),
            }
        }
        Ok(out)
    }

    fn leaf_cell(&self, page: &[u8], at: usize) -> Result<Row, String> {
        let (payload_len, n1) = varint(page, at)?;
        let (rowid, n2) = varint(page, at + n1)?;
        let start = at + n1 + n2;
        let payload_len = usize::try_from(payload_len).map_err(|_| "payload too large")?;
        let payload = self.payload(page, start, payload_len)?;
        let values = record(&payload)?;
        Ok(Row { rowid_value: Value::Int(rowid as i64), values })
    }

    /// A cell's payload, following its overflow pages when it does not fit on the page.
    fn payload(&self, page: &[u8], start: usize, len: usize) -> Result<Vec<u8>, String> {
        let u = self.usable;
        let max_local = u - 35;
        if len <= max_local {
            return Ok(page.get(start..start + len).ok_or("payload cut short")?.to_vec());
        }
        let min_local = (u - 12) * 32 / 255 - 23;
        let k = min_local + (len - min_local) % (u - 4);
        let local = if k <= max_local { k } else { min_local };
        let mut out = page.get(start..start + local).ok_or("payload cut short")?.to_vec();
        let next =
            page.get(start + local..start + local + 4).ok_or("overflow pointer cut short")?;
        let mut next = u32::from_be_bytes([next[0], next[1], next[2], next[3]]);
        let mut hops = 0;
        while out.len() < len {
            hops += 1;
            if next == 0 || hops > MAX_PAGES_WALKED {
                return Err("an overflow chain ends early (corrupt file)".to_owned());
            }
            let p = self.page(next)?;
            let take = (len - out.len()).min(u - 4);
            out.extend_from_slice(p.get(4..4 + take).ok_or("overflow page cut short")?);
            next = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        }
        Ok(out)
    }
}

fn cell_offset(page: &[u8], array: usize, i: usize) -> Result<usize, String> {
    let p = page.get(array + 2 * i..array + 2 * i + 2).ok_or("cell pointer cut short")?;
    Ok(usize::from(u16::from_be_bytes([p[0], p[1]])))
}

/// SQLite's varint: 1-9 bytes, big endian, 7 bits a byte, all 8 in the ninth.
fn varint(bytes: &[u8], at: usize) -> Result<(u64, usize), String> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let b = *bytes.get(at + i).ok_or("varint cut short")?;
        if i == 8 {
            return Ok(((v << 8) | u64::from(b), 9));
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Ok((v, 9))
}

/// The values of a record: a header of serial types, then the values.
fn record(p: &[u8]) -> Result<Vec<Value>, String> {
    let (header_len, mut at) = varint(p, 0)?;
    let header_len = usize::try_from(header_len).map_err(|_| "record header too large")?;
    let mut types = Vec::new();
    while at < header_len {
        let (t, n) = varint(p, at)?;
        types.push(t);
        at += n;
    }
    let mut body = header_len;
    let mut values = Vec::with_capacity(types.len());
    for t in types {
        let int = |len: usize, body: usize| -> Result<i64, String> {
            let b = p.get(body..body + len).ok_or("record value cut short")?;
            let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
            for &byte in b {
                v = (v << 8) | i64::from(byte);
            }
            Ok(v)
        };
        let (value, len) = match t {
            0 => (Value::Null, 0),
            1..=4 => (Value::Int(int(t as usize, body)?), t as usize),
            5 => (Value::Int(int(6, body)?), 6),
            6 => (Value::Int(int(8, body)?), 8),
            7 => (Value::Float(f64::from_bits(int(8, body)? as u64)), 8),
            8 => (Value::Int(0), 0),
            9 => (Value::Int(1), 0),
            10 | 11 => return Err(format!("reserved serial type {t}")),
            n => {
                let len = usize::try_from((n - 12) / 2).map_err(|_| "value too large")?;
                let b = p.get(body..body + len).ok_or("record value cut short")?.to_vec();
                if n % 2 == 0 {
                    (Value::Blob(b), len)
                } else {
                    (Value::Text(String::from_utf8_lossy(&b).into_owned()), len)
                }
            }
        };
        values.push(value);
        body += len;
    }
    Ok(values)
}

/// Column names of a `CREATE TABLE name (...)` statement, in order, and which one is the
/// rowid (an `INTEGER PRIMARY KEY`).
fn column_names(sql: &str) -> Result<Vec<Column>, String> {
    let open = sql.find('(').ok_or("a CREATE TABLE without columns")?;
    let close = sql.rfind(')').ok_or("a CREATE TABLE without columns")?;
    let body = sql.get(open + 1..close).ok_or("a CREATE TABLE without columns")?;
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    let mut out = Vec::new();
    for part in parts {
        let def = part.trim();
        let upper = def.to_ascii_uppercase();
        if ["PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT"]
            .iter()
            .any(|k| upper.starts_with(k))
        {
            continue;
        }
        let name: String = match def.chars().next() {
            Some(q @ ('"' | '`' | '[')) => {
                let end = if q == '[' { ']' } else { q };
                def[1..].chars().take_while(|c| *c != end).collect()
            }
            _ => def.split_whitespace().next().unwrap_or_default().to_owned(),
        };
        let words: Vec<&str> = upper.split_whitespace().collect();
        let rowid_alias = words.get(1) == Some(&"INTEGER")
            && upper.contains("PRIMARY KEY")
            && !upper.contains("DESC");
        out.push(Column { name, rowid_alias });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_one_to_nine_bytes() {
        assert_eq!(varint(&[0x05], 0).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9], 0).unwrap(), (u64::MAX, 9));
        assert!(varint(&[0x81], 0).is_err());
    }

    #[test]
    fn column_names_are_read_with_quotes_constraints_and_the_rowid() {
        let cols = column_names(
            "CREATE TABLE sessions (\n  dc_id integer primary key,\n  \"server_address\" text,\n  [port] integer,\n  auth_key blob, takeout_id integer, PRIMARY KEY (dc_id))",
        )
        .unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["dc_id", "server_address", "port", "auth_key", "takeout_id"]);
        assert!(cols[0].rowid_alias && !cols[2].rowid_alias);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(parse(b"").unwrap_err().contains("not an SQLite database"));
        let mut fake = b"SQLite format 3\0".to_vec();
        fake.extend_from_slice(&[0x10, 0x00]);
        fake.resize(4096, 0xAB);
        assert!(parse(&fake).is_err());
        for cut in [100, 500, 2000, 4095] {
            let _ = parse(&fake[..cut]);
        }
    }
}
