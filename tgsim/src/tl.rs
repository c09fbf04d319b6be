//! TL fixtures: the API objects tgsim answers with (most have dozens of fields and no
//! `Default`), and the few MTProto service messages, which are written by hand.

use grammers_tl_types::{self as tl, Serializable};

use crate::scenario::{Account, AppConfig, Group};

/// Constructor ids of the MTProto layer that tgsim reads or writes itself.
pub mod ids {
    pub const RPC_RESULT: u32 = 0xf35c6d01;
    pub const RPC_ERROR: u32 = 0x2144ca19;
    pub const MSG_CONTAINER: u32 = 0x73f1f8dc;
    pub const GZIP_PACKED: u32 = 0x3072cfa1;
    pub const MSGS_ACK: u32 = 0x62d6b459;
    pub const PING: u32 = 0x7abe77ec;
    pub const PING_DELAY_DISCONNECT: u32 = 0xf3427b8c;
    pub const PONG: u32 = 0x347773c5;
    pub const GET_FUTURE_SALTS: u32 = 0xb921bd04;
    pub const FUTURE_SALTS: u32 = 0xae500895;
    pub const FUTURE_SALT: u32 = 0x0949d9dc;
    pub const DESTROY_SESSION: u32 = 0xe7512126;
    pub const DESTROY_SESSION_NONE: u32 = 0x62d350c9;
    pub const RPC_DROP_ANSWER: u32 = 0x58e4a740;
    pub const RPC_ANSWER_UNKNOWN: u32 = 0x5e2ad36e;
    pub const MSGS_STATE_REQ: u32 = 0xda69fb52;
    pub const HTTP_WAIT: u32 = 0x9299359f;
    pub const INVOKE_WITH_LAYER: u32 = 0xda9b0d0d;
    pub const INIT_CONNECTION: u32 = 0xc1cd5ea9;
    pub const INVOKE_WITHOUT_UPDATES: u32 = 0xbf9459b7;
    pub const INVOKE_AFTER_MSG: u32 = 0xcb9f372d;
}

/// `rpc_result#f35c6d01 req_msg_id:long result:Object`.
pub fn rpc_result(req_msg_id: i64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + result.len());
    ids::RPC_RESULT.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    out.extend_from_slice(result);
    out
}

/// `rpc_error#2144ca19 error_code:int error_message:string`.
pub fn rpc_error(code: i32, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ids::RPC_ERROR.serialize(&mut out);
    code.serialize(&mut out);
    message.to_owned().serialize(&mut out);
    out
}

/// `pong#347773c5 msg_id:long ping_id:long`.
pub fn pong(msg_id: i64, ping_id: i64) -> Vec<u8> {
    let mut out = Vec::new();
    ids::PONG.serialize(&mut out);
    msg_id.serialize(&mut out);
    ping_id.serialize(&mut out);
    out
}

/// `future_salts#ae500895 req_msg_id:long now:int salts:vector<future_salt>` with `count` salts
/// that are all 0 (tgsim never changes salt), one hour each.
pub fn future_salts(req_msg_id: i64, now: i32, count: i32) -> Vec<u8> {
    let mut out = Vec::new();
    ids::FUTURE_SALTS.serialize(&mut out);
    req_msg_id.serialize(&mut out);
    now.serialize(&mut out);
    count.max(2).serialize(&mut out); // bare vector: just the length
    for i in 0..count.max(2) {
        ids::FUTURE_SALT.serialize(&mut out);
        (now + i * 3600).serialize(&mut out);
        (now + (i + 1) * 3600).serialize(&mut out);
        0i64.serialize(&mut out);
    }
    out
}

/// `rpc_answer_unknown#5e2ad36e`.
pub fn rpc_answer_unknown() -> Vec<u8> {
    ids::RPC_ANSWER_UNKNOWN.to_le_bytes().to_vec()
}

/// `destroy_session_none#62d350c9 session_id:long`.
pub fn destroy_session_none(session_id: i64) -> Vec<u8> {
    let mut out = Vec::new();
    ids::DESTROY_SESSION_NONE.serialize(&mut out);
    session_id.serialize(&mut out);
    out
}

/// The `Config` answered to `help.getConfig`: no dc_options, so grammers keeps the address the
/// session already has (tgsim's own).
pub fn config(this_dc: i32, now: i32) -> tl::enums::Config {
    tl::enums::Config::Config(tl::types::Config {
        default_p2p_contacts: false,
        preload_featured_stickers: false,
        revoke_pm_inbox: false,
        blocked_mode: false,
        force_try_ipv6: false,
        date: now,
        expires: now + 3600,
        test_mode: false,
        this_dc,
        dc_options: Vec::new(),
        dc_txt_domain_name: String::new(),
        chat_size_max: 200,
        megagroup_size_max: 200_000,
        forwarded_count_max: 100,
        online_update_period_ms: 210_000,
        offline_blur_timeout_ms: 5_000,
        offline_idle_timeout_ms: 30_000,
        online_cloud_timeout_ms: 300_000,
        notify_cloud_delay_ms: 30_000,
        notify_default_delay_ms: 1_500,
        push_chat_period_ms: 60_000,
        push_chat_limit: 2,
        edit_time_limit: 172_800,
        revoke_time_limit: i32::MAX,
        revoke_pm_time_limit: i32::MAX,
        rating_e_decay: 2_419_200,
        stickers_recent_limit: 200,
        channels_read_media_period: 604_800,
        tmp_sessions: None,
        call_receive_timeout_ms: 20_000,
        call_ring_timeout_ms: 90_000,
        call_connect_timeout_ms: 30_000,
        call_packet_timeout_ms: 10_000,
        me_url_prefix: "https://t.me/".into(),
        autoupdate_url_prefix: None,
        gif_search_username: None,
        venue_search_username: None,
        img_search_username: None,
        static_maps_provider: None,
        caption_length_max: 1024,
        message_length_max: 4096,
        webfile_dc_id: this_dc,
        suggested_lang_code: None,
        lang_pack_version: None,
        base_lang_pack_version: None,
        reactions_default: None,
        autologin_token: None,
    })
}

/// A user object. `is_self` marks the account's own user (what `users.getUsers([self])` gives).
pub fn user(
    id: i64,
    access_hash: i64,
    first_name: &str,
    username: Option<&str>,
    is_self: bool,
) -> tl::enums::User {
    tl::enums::User::User(tl::types::User {
        is_self,
        contact: false,
        mutual_contact: false,
        deleted: false,
        bot: false,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id,
        access_hash: Some(access_hash),
        first_name: Some(first_name.to_owned()),
        last_name: None,
        username: username.map(str::to_owned),
        phone: None,
        photo: None,
        status: None,
        bot_info_version: None,
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    })
}

/// The account's own user object.
pub fn self_user(account: &Account) -> tl::enums::User {
    let mut u = user(
        account.user_id,
        account.user_id.rotate_left(17) ^ 0x5eed,
        &account.first_name,
        account.username.as_deref(),
        true,
    );
    if let tl::enums::User::User(ref mut inner) = u {
        inner.last_name = account.last_name.clone();
        inner.phone = account.phone.clone();
        inner.premium = account.premium;
    }
    u
}

/// A channel or supergroup as seen by one account (`access_hash` is per account on Telegram,
/// and `left` tells whether this account is a member).
pub fn channel(group: &Group, access_hash: i64, member: bool, now: i32) -> tl::enums::Chat {
    tl::enums::Chat::Channel(tl::types::Channel {
        creator: false,
        left: !member,
        broadcast: group.broadcast,
        verified: false,
        megagroup: !group.broadcast,
        restricted: false,
        signatures: false,
        min: false,
        scam: false,
        has_link: false,
        has_geo: false,
        slowmode_enabled: false,
        call_active: false,
        call_not_empty: false,
        fake: false,
        gigagroup: false,
        noforwards: false,
        join_to_send: false,
        join_request: group.request_needed,
        forum: false,
        stories_hidden: false,
        stories_hidden_min: false,
        stories_unavailable: false,
        signature_profiles: false,
        autotranslation: false,
        broadcast_messages_allowed: false,
        monoforum: false,
        forum_tabs: false,
        id: group.id,
        access_hash: Some(access_hash),
        title: group.title.clone(),
        username: group.username.clone(),
        photo: tl::enums::ChatPhoto::Empty,
        date: if member { now } else { 0 },
        restriction_reason: None,
        admin_rights: None,
        banned_rights: None,
        default_banned_rights: None,
        participants_count: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        emoji_status: None,
        level: None,
        subscription_until_date: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_monoforum_id: None,
        linked_community_id: None,
    })
}

/// `contacts.resolvedPeer` for a channel.
pub fn resolved_channel(
    chat: tl::enums::Chat,
    channel_id: i64,
) -> tl::enums::contacts::ResolvedPeer {
    tl::enums::contacts::ResolvedPeer::Peer(tl::types::contacts::ResolvedPeer {
        peer: tl::enums::Peer::Channel(tl::types::PeerChannel { channel_id }),
        chats: vec![chat],
        users: Vec::new(),
    })
}

/// The `Updates` a successful join carries: the channel, no update list (seq 0 means unordered).
pub fn join_ok(chat: tl::enums::Chat, now: i32) -> tl::enums::messages::ChatInviteJoinResult {
    tl::enums::messages::ChatInviteJoinResult::Ok(tl::types::messages::ChatInviteJoinResultOk {
        updates: tl::enums::Updates::Updates(tl::types::Updates {
            updates: Vec::new(),
            users: Vec::new(),
            chats: vec![chat],
            date: now,
            seq: 0,
        }),
    })
}

/// A guard bot will decide about the join later (`messages.chatInviteJoinResultWebView`).
pub fn join_web_view(bot_id: i64, query_id: i64) -> tl::enums::messages::ChatInviteJoinResult {
    tl::enums::messages::ChatInviteJoinResult::WebView(
        tl::types::messages::ChatInviteJoinResultWebView {
            bot_id,
            query_id,
            users: vec![user(bot_id, bot_id ^ 0x0b07, "Guard", None, false)],
        },
    )
}

/// `messages.checkChatInvite` for a group the account is not in.
pub fn chat_invite(group: &Group, participants: i32) -> tl::enums::ChatInvite {
    tl::enums::ChatInvite::Invite(tl::types::ChatInvite {
        channel: true,
        broadcast: group.broadcast,
        public: group.username.is_some(),
        megagroup: !group.broadcast,
        request_needed: group.request_needed,
        verified: false,
        scam: false,
        fake: false,
        can_refulfill_subscription: false,
        title: group.title.clone(),
        about: None,
        photo: tl::enums::Photo::Empty(tl::types::PhotoEmpty { id: 0 }),
        participants_count: participants,
        participants: None,
        color: 0,
        subscription_pricing: None,
        subscription_form_id: None,
        bot_verification: None,
    })
}

/// `messages.checkChatInvite` for a group the account is already in.
pub fn chat_invite_already(chat: tl::enums::Chat) -> tl::enums::ChatInvite {
    tl::enums::ChatInvite::Already(tl::types::ChatInviteAlready { chat })
}

/// The `pts` of every account's update stream: tgsim never produces an update.
pub const PTS: i32 = 1;

/// The `seq` of every account's update stream.
pub const SEQ: i32 = 1;

/// `updates.state` (what `is_authorized` asks for).
pub fn updates_state(now: i32) -> tl::enums::updates::State {
    tl::enums::updates::State::State(tl::types::updates::State {
        pts: PTS,
        qts: 0,
        date: now,
        seq: SEQ,
        unread_count: 0,
    })
}

/// `updates.getDifference` from a client at `pts`: `updates.differenceEmpty` when it is at the
/// stream's state, else an empty `updates.difference` carrying the state (as Telegram answers a
/// client whose pts is behind or unknown).
pub fn difference(pts: i32, now: i32) -> tl::enums::updates::Difference {
    if pts == PTS {
        return tl::enums::updates::Difference::Empty(tl::types::updates::DifferenceEmpty {
            date: now,
            seq: SEQ,
        });
    }
    tl::enums::updates::Difference::Difference(tl::types::updates::Difference {
        new_messages: Vec::new(),
        new_encrypted_messages: Vec::new(),
        other_updates: Vec::new(),
        chats: Vec::new(),
        users: Vec::new(),
        state: updates_state(now),
    })
}

/// `updates.getChannelDifference` of a channel the account is in: nothing new, final.
pub fn channel_difference_empty() -> tl::enums::updates::ChannelDifference {
    tl::enums::updates::ChannelDifference::Empty(tl::types::updates::ChannelDifferenceEmpty {
        r#final: true,
        pts: PTS,
        timeout: None,
    })
}

/// `help.getNearestDc`: the DC the client is connected to is the nearest.
/// help.appConfig for `account`: the scenario's limits and the account's freeze, if any.
pub fn app_config(limits: &AppConfig, account: &Account) -> tl::enums::help::AppConfig {
    let number = |key: &str, value: f64| {
        tl::enums::JsonobjectValue::JsonObjectValue(tl::types::JsonObjectValue {
            key: key.to_owned(),
            value: tl::enums::Jsonvalue::JsonNumber(tl::types::JsonNumber { value }),
        })
    };
    let mut values = vec![
        number("channels_limit_default", f64::from(limits.channels_limit_default)),
        number("channels_limit_premium", f64::from(limits.channels_limit_premium)),
        number("chatlists_joined_limit_default", f64::from(limits.chatlists_joined_limit_default)),
    ];
    if let Some(freeze) = &account.frozen {
        values.push(number("freeze_since_date", freeze.since as f64));
        values.push(number("freeze_until_date", freeze.until as f64));
        values.push(tl::enums::JsonobjectValue::JsonObjectValue(tl::types::JsonObjectValue {
            key: "freeze_appeal_url".to_owned(),
            value: tl::enums::Jsonvalue::JsonString(tl::types::JsonString {
                value: freeze.appeal_url.clone(),
            }),
        }));
    }
    tl::enums::help::AppConfig::Config(tl::types::help::AppConfig {
        hash: 1,
        config: tl::enums::Jsonvalue::JsonObject(tl::types::JsonObject { value: values }),
    })
}

/// chatlists.chatlistInvite: a folder's title and its groups (`chats`, as the account sees
/// them).
pub fn chatlist_invite(
    title: &str,
    groups: &[Group],
    listed: &[usize],
    chats: Vec<tl::enums::Chat>,
) -> tl::enums::chatlists::ChatlistInvite {
    let peers = listed
        .iter()
        .map(|&g| tl::enums::Peer::Channel(tl::types::PeerChannel { channel_id: groups[g].id }))
        .collect();
    tl::enums::chatlists::ChatlistInvite::Invite(tl::types::chatlists::ChatlistInvite {
        title_noanimate: false,
        title: tl::enums::TextWithEntities::Entities(tl::types::TextWithEntities {
            text: title.to_owned(),
            entities: Vec::new(),
        }),
        emoticon: None,
        peers,
        chats,
        users: Vec::new(),
    })
}

pub fn nearest_dc(this_dc: i32) -> tl::enums::NearestDc {
    tl::enums::NearestDc::Dc(tl::types::NearestDc {
        country: String::new(),
        this_dc,
        nearest_dc: this_dc,
    })
}
