//! The frame every console page shares, and the small pieces pages are built from. maud
//! escapes every value interpolated into a template; nothing here marks text as markup.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::{CSRF_FIELD, FLASH_COOKIE, Flash, FlashKind, Staff, clear_cookie};
use crate::error::ApiError;

/// Which section of the console a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Overview,
    Orders,
    Fulfilment,
    Users,
    Notifications,
    Webhooks,
    None,
}

/// A whole page: navigation (when signed in), the flash message, `body`.
pub(super) fn page(
    status: StatusCode,
    staff: Option<&Staff>,
    section: Section,
    flash: Option<&Flash>,
    title: &str,
    body: Markup,
) -> Response {
    let nav = [
        (Section::Overview, "/console/", "Overview"),
        (Section::Orders, "/console/orders", "Orders"),
        (Section::Fulfilment, "/console/fulfilment", "Fulfilment"),
        (Section::Users, "/console/users", "Users"),
        (Section::Notifications, "/console/notifications", "Notifications"),
        (Section::Webhooks, "/console/webhooks", "Webhooks"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · SOM console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/" { "SOM console" }
                    @if let Some(staff) = staff {
                        nav aria-label="Sections" {
                            @for (s, href, label) in nav {
                                @if s == section {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            (csrf(staff))
                            span.who { (staff.user.username.as_str()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if let Some(Flash(kind, text)) = flash {
                        @let class = if *kind == FlashKind::Done { "flash done" } else { "flash error" };
                        div class=(class) role=(if *kind == FlashKind::Done { "status" } else { "alert" }) { (text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
    if flash.is_some() {
        response.headers_mut().append(header::SET_COOKIE, clear_cookie(FLASH_COOKIE));
    }
    response
}

/// A page saying one thing, with an optional link onwards.
pub(super) fn message_page(status: StatusCode, title: &str, text: &str, link: Option<(&str, &str)>) -> Response {
    let body = html! {
        p { (text) }
        @if let Some((href, label)) = link {
            p { a href=(href) { (label) } }
        }
    };
    page(status, None, Section::None, None, title, body)
}

/// A page for an error the facade returned: the status and detail the API would have sent.
pub(super) fn error_page(staff: Option<&Staff>, e: &ApiError) -> Response {
    let body = html! {
        p.problem { (e.detail()) }
        p { a href="/console/" { "Back to the overview" } }
    };
    let mut response = page(e.status(), staff, Section::None, None, e.title(), body);
    for (name, value) in e.headers() {
        if name != header::WWW_AUTHENTICATE {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// The hidden CSRF field every form that changes something carries.
pub(super) fn csrf(staff: &Staff) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(staff.csrf); }
}

/// A time in UTC, with its zone shown.
pub(super) fn when(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Written out rather than through a format string: a page of 50 orders shows 50 of them.
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second())
}

/// A status as a badge.
pub(super) fn badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status.to_ascii_lowercase()) } { (status) } }
}

/// The message of a facade error, as a flash for the next page.
pub(super) fn refused(e: som_core::Error) -> Flash {
    let e = ApiError::from(e);
    Flash(FlashKind::Error, format!("{} ({}): {}", e.title(), e.status().as_u16(), e.detail()))
}

/// A cursor link to the next page of a list, keeping the list's filters.
pub(super) fn next_page(path: &str, filters: &[(&str, String)], cursor: Option<&str>) -> Markup {
    let Some(cursor) = cursor else { return html! {} };
    let mut query: Vec<String> = filters
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", super::session::encode_query(v)))
        .collect();
    query.push(format!("cursor={}", super::session::encode_query(cursor)));
    let href = format!("{path}?{}", query.join("&"));
    html! { p.pager { a href=(href) rel="next" { "Next page →" } } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_show_their_zone() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-04T05:06:07.89Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(super::when(t), "2026-03-04 05:06:07 UTC");
    }
}
