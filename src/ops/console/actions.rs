//! The console's actions: each checks the admin token and the form's CSRF token, then makes
//! one audited store call (the same the CLI makes), and answers with a redirect to the page
//! it came from or a page saying why nothing was done.

use axum::Extension;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::html::{self, Tab, esc};
use super::pages::{PageError, visitor};
use super::{Access, Console, Shared};
use crate::store::ActionResult;

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PauseForm {
    #[serde(default)]
    csrf: String,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ReleaseForm {
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ImportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    niche: String,
    #[serde(default)]
    links: String,
    skip_invalid: Option<String>,
}

/// Why a request may not act.
enum Refusal {
    ReadOnly,
    NotAdmin,
    Csrf,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::ReadOnly => (
                StatusCode::FORBIDDEN,
                "this console is read-only: set CONSOLE_ADMIN_TOKEN to allow actions\n",
            )
                .into_response(),
            Refusal::NotAdmin => super::unauthorized("actions need the admin token"),
            Refusal::Csrf => (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong: reload the page and try again\n",
            )
                .into_response(),
        }
    }
}

/// The actor when the request may act, or why not.
fn admit<'a>(
    c: &Console,
    access: &'a Access,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<&'a str, Refusal> {
    if !c.auth.actions_enabled() {
        return Err(Refusal::ReadOnly);
    }
    let Some(actor) = access.actor() else {
        return Err(Refusal::NotAdmin);
    };
    if !c.auth.csrf_ok(headers, csrf) {
        tracing::warn!(actor, "console: a form without a valid CSRF token was refused");
        return Err(Refusal::Csrf);
    }
    Ok(actor)
}

fn see_other(location: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn refused(c: &Console, access: &Access, why: &str, back: &str) -> Response {
    let body = format!(
        "<div class=\"refused\" role=\"alert\">Nothing was done: {}</div><p><a href=\"{back}\">Back</a></p>",
        esc(why)
    );
    let v = visitor(c, access);
    (StatusCode::CONFLICT, Html(html::page("Refused", Tab::Pools, &v, &body))).into_response()
}

fn answer(
    c: &Console,
    access: &Access,
    result: ActionResult,
    back: String,
    notice: &str,
) -> Response {
    match result {
        ActionResult::Done => see_other(format!("{back}?notice={notice}")),
        ActionResult::Refused(why) => refused(c, access, &why, &back),
    }
}

pub(super) async fn pause(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<PauseForm>,
) -> Result<Response, PageError> {
    let actor = match admit(&c, &access, &headers, &f.csrf) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let note: Option<String> = f.note.map(|n| n.chars().take(200).collect());
    let result = c.store.pause_account(id, actor, note.as_deref(), c.store.now()).await?;
    if result.is_done() {
        tracing::info!(actor, account_id = id, "console: account paused");
    }
    Ok(answer(&c, &access, result, format!("/accounts/{id}"), "paused"))
}

pub(super) async fn resume(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let actor = match admit(&c, &access, &headers, &f.csrf) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let result = c.store.resume_account(id, actor, c.store.now()).await?;
    if result.is_done() {
        tracing::info!(actor, account_id = id, "console: account resumed");
    }
    Ok(answer(&c, &access, result, format!("/accounts/{id}"), "resumed"))
}

pub(super) async fn retry(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let actor = match admit(&c, &access, &headers, &f.csrf) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let result = c.store.retry_target(id, actor, c.store.now()).await?;
    if result.is_done() {
        tracing::info!(actor, target_id = id, "console: error group retried");
    }
    Ok(answer(&c, &access, result, format!("/groups/{id}"), "retried"))
}

pub(super) async fn release(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<ReleaseForm>,
) -> Result<Response, PageError> {
    let actor = match admit(&c, &access, &headers, &f.csrf) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    if f.confirm.as_deref() != Some("yes") {
        let why = "confirm first that the pinned account is not a member of the group";
        return Ok(refused(&c, &access, why, &format!("/groups/{id}")));
    }
    // Whether the pinned account is held now is a time another process wrote.
    c.store.resync_clock_if_due().await;
    let result = c.store.release_pin(id, actor, c.store.now()).await?;
    if result.is_done() {
        tracing::info!(actor, target_id = id, "console: in-doubt pin released");
    }
    Ok(answer(&c, &access, result, format!("/groups/{id}"), "released"))
}

pub(super) async fn import(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Form(f): Form<ImportForm>,
) -> Result<Response, PageError> {
    let actor = match admit(&c, &access, &headers, &f.csrf) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let niche = f.niche.trim();
    if niche.is_empty() {
        return Ok(refused(&c, &access, "the niche must not be empty", "/groups"));
    }
    let parsed = crate::ops::targets_file::parse_targets(&f.links);
    if parsed.links.is_empty() && parsed.rejected.is_empty() {
        let why = "no link given (one link per line, or a CSV whose first column is the link)";
        return Ok(refused(&c, &access, why, "/groups"));
    }
    if !parsed.rejected.is_empty() && f.skip_invalid.as_deref() != Some("yes") {
        let lines: Vec<String> = parsed
            .rejected
            .iter()
            .take(20)
            .map(|(line, text, why)| {
                format!("line {line}: {} ({why})", crate::ops::targets_file::shown_line(text, why))
            })
            .collect();
        let why = format!(
            "{} invalid line(s), so nothing was imported (fix them or skip invalid lines): {}",
            parsed.rejected.len(),
            lines.join("; ")
        );
        return Ok(refused(&c, &access, &why, "/groups"));
    }
    let links: Vec<_> = parsed.links.into_iter().map(|(_, l)| l).collect();
    let report = c.store.import_targets_audited(&links, niche, actor, c.store.now()).await?;
    tracing::info!(
        actor,
        niche,
        accepted = report.inserted,
        duplicates = report.duplicates,
        "console: targets imported"
    );
    Ok(see_other(format!("/groups?niche={}&notice=imported", html::q(niche))))
}
