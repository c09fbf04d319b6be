//! Folder links (`t.me/addlist/SLUG`): a shared folder of chats. Not a chat itself: `targets
//! import` expands one into its chats (one chatlists.checkChatlistInvite), and each chat with a
//! username becomes its own target, recorded with the folder it came from.

use std::fmt;

/// A parsed folder link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FolderLink {
    slug: String,
}

/// One chat a folder lists, as the checking account sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderChat {
    /// Telegram's id of the chat.
    pub id: i64,
    pub title: String,
    /// Its public username; None for a chat only members or the bulk join can reach.
    pub username: Option<String>,
}

/// What chatlists.checkChatlistInvite lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FolderContents {
    pub title: String,
    pub chats: Vec<FolderChat>,
}

fn valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FolderLink {
    /// Reads `t.me/addlist/SLUG` (also telegram.me and telegram.dog, with or without
    /// `https://`) and `tg://addlist?slug=SLUG`; None for anything else.
    pub fn parse(input: &str) -> Option<Self> {
        let s = input.trim();
        let lower = s.to_ascii_lowercase();
        let slug = if let Some(query) = lower.strip_prefix("tg://addlist?") {
            let at = s.len() - query.len();
            s[at..].split('&').find_map(|kv| kv.strip_prefix("slug="))?
        } else {
            // Lowercasing keeps byte offsets: the slug is cut from the input as written.
            let rest = ["https://", "http://"]
                .iter()
                .find_map(|p| lower.strip_prefix(p))
                .unwrap_or(&lower);
            let rest = rest.strip_prefix("www.").unwrap_or(rest);
            let (host, path) = rest.split_once('/')?;
            if !matches!(host, "t.me" | "telegram.me" | "telegram.dog") {
                return None;
            }
            path.strip_prefix("addlist/")?;
            let start = s.len() - path.len() + "addlist/".len();
            s[start..].trim_end_matches('/')
        };
        valid_slug(slug).then(|| Self { slug: slug.to_owned() })
    }

    pub fn slug(&self) -> &str {
        &self.slug
    }
}

impl fmt::Display for FolderLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t.me/addlist/{}", self.slug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_folder_link_gives_its_slug_as_written() {
        for link in [
            "t.me/addlist/AbC-d_9",
            "https://t.me/addlist/AbC-d_9",
            "HTTPS://WWW.T.ME/addlist/AbC-d_9/",
            "telegram.me/addlist/AbC-d_9",
            "tg://addlist?slug=AbC-d_9",
        ] {
            let f = FolderLink::parse(link).unwrap_or_else(|| panic!("{link}"));
            assert_eq!(f.slug(), "AbC-d_9", "{link}");
            assert_eq!(f.to_string(), "t.me/addlist/AbC-d_9");
        }
    }

    #[test]
    fn anything_else_is_not_a_folder_link() {
        for link in ["@cars", "t.me/cars", "t.me/addlist/", "t.me/addlist/a b", "t.me/+abc", ""] {
            assert_eq!(FolderLink::parse(link), None, "{link}");
        }
    }
}
