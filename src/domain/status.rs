//! Account and target statuses, with SmartJoiner's names (they are the database values).

use std::fmt;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The database and log spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Reads the database spelling back.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// State of an account in the pool.
    AccountStatus {
        /// Can work when its pacing allows.
        Active => "active",
        /// A short FloodWait (<= threshold) is running; expires by itself.
        FloodWait => "flood_wait",
        /// A long FloodWait or PEER_FLOOD; expires by itself.
        Cooldown => "cooldown",
        /// Banned by Telegram: needs an operator.
        Banned => "banned",
        /// The session is no longer valid: needs an operator (a new login).
        Unauthorized => "unauthorized",
        /// Frozen by Telegram (FROZEN_METHOD_INVALID): needs an operator.
        Frozen => "frozen",
        /// In too many channels (CHANNELS_TOO_MUCH): needs an operator.
        Full => "full",
        /// Paused by an operator (`accounts pause`, the console): never picked until resumed.
        /// A join already under way finishes and is recorded; the account stays paused.
        Paused => "paused",
    }
}

impl AccountStatus {
    /// Statuses that end on their own when next_allowed_action_time passes.
    pub fn expires(self) -> bool {
        matches!(self, AccountStatus::FloodWait | AccountStatus::Cooldown)
    }

    /// How bad the status is, for verdicts that may only ever worsen it: working, then the
    /// waits by length, then an operator's pause, then the statuses that need an operator, a
    /// ban last. A wait Telegram imposes on a paused account leaves it paused (the rest is
    /// still recorded in `next_allowed_action_time`); a ban or a revoked session replaces the
    /// pause, so resuming can never hide one.
    pub fn severity(self) -> u8 {
        match self {
            AccountStatus::Active => 0,
            AccountStatus::FloodWait => 1,
            AccountStatus::Cooldown => 2,
            AccountStatus::Paused => 3,
            AccountStatus::Full => 4,
            AccountStatus::Frozen => 5,
            AccountStatus::Unauthorized => 6,
            AccountStatus::Banned => 7,
        }
    }

    /// Whether an operator may pause an account in this status: only one that could work
    /// (a pause never replaces a worse status).
    pub fn can_pause(self) -> bool {
        self.severity() < AccountStatus::Paused.severity()
    }

    /// Whether an account in this status may ever work again without an operator.
    pub fn can_work(self) -> bool {
        self == AccountStatus::Active || self.expires()
    }
}

string_enum! {
    /// State of a target group or channel.
    TargetStatus {
        /// Imported, not yet scheduled.
        New => "new",
        /// A job exists (or will be rebuilt by the producer) for it.
        Queued => "queued",
        /// Claimed by an account; a join is in flight or in doubt.
        Joining => "joining",
        /// Joined and bound to its account.
        Joined => "joined",
        /// A join request was filed (or a guard bot decides): bound, pending approval.
        Requested => "requested",
        /// The link is dead or refused the join for good.
        Error => "error",
        /// The account was banned in this group.
        Banned => "banned",
    }
}

impl TargetStatus {
    /// Terminal statuses never change again by themselves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TargetStatus::Joined
                | TargetStatus::Requested
                | TargetStatus::Error
                | TargetStatus::Banned
        )
    }

    /// Statuses a join job still has work to do for.
    pub fn is_workable(self) -> bool {
        matches!(self, TargetStatus::New | TargetStatus::Queued | TargetStatus::Joining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_database_spelling() {
        for s in AccountStatus::ALL {
            assert_eq!(AccountStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for s in TargetStatus::ALL {
            assert_eq!(TargetStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(AccountStatus::parse("nope"), None);
    }

    #[test]
    fn a_pause_ranks_above_the_waits_and_below_every_operator_status() {
        use AccountStatus::*;
        assert!(!Paused.can_work());
        let pausable: Vec<_> = AccountStatus::ALL.iter().filter(|s| s.can_pause()).collect();
        assert_eq!(pausable, [&Active, &FloodWait, &Cooldown]);
        for worse in [Full, Frozen, Unauthorized, Banned] {
            assert!(worse.severity() > Paused.severity(), "{worse}");
        }
    }

    #[test]
    fn only_waits_expire_and_operator_statuses_never_work() {
        let working: Vec<_> = AccountStatus::ALL.iter().filter(|s| s.can_work()).collect();
        assert_eq!(
            working,
            [&AccountStatus::Active, &AccountStatus::FloodWait, &AccountStatus::Cooldown]
        );
    }
}
