//! The route dispatcher: one `handle` for every `/api/v1` request, after its route's access
//! rule, and the login.

use super::{
    Ctx, DESK_ACTIONS, OPENAPI, ROUTES, alarms, authorize, cross_origin, desk_command, desk_view,
    devices, error, evacuation, execute_error, find_route, idempotency_key, json_reply,
    kiosk_services, kiosk_ticket, parse, presence, read_body, registry, stats, too_many,
    unavailable,
};
use crate::auth::{LoginError, User};
use futures_util::Stream;
use leitsystem_runtime::domain::{
    Command, CommandRequest, DeskId, ForwardTarget, ServiceId, TicketNumber,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use warp::Reply;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::hyper::body::Buf;

/// The `/api/v1/...` dispatcher (all routes but the WebSocket upgrades).
pub async fn handle(
    tail: String,
    method: Method,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    ctx: Ctx,
) -> warp::reply::Response {
    let segments: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
    let Some((route, params)) = find_route(method.as_str(), &segments) else {
        let known_path = ROUTES.iter().any(|r| {
            find_route(r.method, &segments).is_some_and(|(found, _)| found.path == r.path)
        });
        return if known_path {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        } else {
            error(StatusCode::NOT_FOUND, "not_found", "no such API route")
        };
    };
    let user = match authorize(&ctx.api, &route, &params, &headers, remote.map(|a| a.ip())) {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    if method == Method::POST && cross_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the request comes from another origin",
        );
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let source = user.as_ref().map_or_else(
        || "web:kiosk".to_string(),
        |(_, u)| format!("web:{}", u.name),
    );
    let request_id = idempotency_key(&headers);
    let ip = remote.map(|a| a.ip());
    match route.path {
        "/openapi.json" => warp::reply::with_header(
            warp::reply::with_header(OPENAPI, "content-type", "application/json"),
            "cache-control",
            "no-store",
        )
        .into_response(),
        "/display" => {
            let display = ctx.display.borrow().clone();
            warp::reply::json(&*display).into_response()
        }
        // Changes only with the config, and a page fetches it once when it loads.
        "/hyphenation" => warp::reply::with_header(
            warp::reply::with_header(
                ctx.api.hyphenation.clone(),
                "content-type",
                "application/json",
            ),
            "cache-control",
            "no-store",
        )
        .into_response(),
        "/login" => login(&ctx, &body, ip).await,
        "/logout" => {
            if let Some((token, _)) = &user {
                ctx.api.auth.logout(token).await;
            }
            let reply = json_reply(StatusCode::OK, &json!({"ok": true}));
            warp::reply::with_header(
                reply,
                "set-cookie",
                format!(
                    "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    crate::auth::COOKIE
                ),
            )
            .into_response()
        }
        "/session" => match &user {
            Some((_, u)) => json_reply(StatusCode::OK, &user_json(u)),
            None => error(StatusCode::UNAUTHORIZED, "unauthorized", "log in first"),
        },
        "/desks/{desk}" => match desk_view(&ctx, params[0]).await {
            Ok(view) => json_reply(StatusCode::OK, &view),
            Err(answer) => answer,
        },
        "/desks/{desk}/ws" => error(
            StatusCode::BAD_REQUEST,
            "websocket_expected",
            "this is a WebSocket endpoint",
        ),
        "/desks/{desk}/forward" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Forward {
                service: Option<String>,
                desk: Option<String>,
            }
            let forward: Forward = match parse(&body) {
                Ok(f) => f,
                Err(answer) => return answer,
            };
            let target = match (forward.service, forward.desk) {
                (Some(s), None) => ForwardTarget::Service(ServiceId::new(s)),
                (None, Some(d)) => ForwardTarget::Desk(DeskId::new(d)),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "give either service or desk",
                    );
                }
            };
            let command = Command::Forward {
                desk: DeskId::new(params[0]),
                target,
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/resume" => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Resume {
                ticket: Option<String>,
            }
            let resume: Resume = if body.iter().all(u8::is_ascii_whitespace) {
                Resume::default()
            } else {
                match parse(&body) {
                    Ok(r) => r,
                    Err(answer) => return answer,
                }
            };
            let command = Command::ResumeAtDesk {
                desk: DeskId::new(params[0]),
                ticket: resume.ticket.map(TicketNumber::new),
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/alarm" => {
            let command = Command::SilentAlarm {
                desk: DeskId::new(params[0]),
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/{action}" => match desk_command(params[1], DeskId::new(params[0])) {
            Some(command) => run(&ctx, source, request_id, command).await,
            None => error(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("actions are {}", DESK_ACTIONS.join(", ")),
            ),
        },
        "/kiosk/services" => kiosk_services(&ctx).await,
        "/kiosk/tickets" => kiosk_ticket(&ctx, &body, ip, request_id).await,
        "/kiosk/ws" => error(
            StatusCode::BAD_REQUEST,
            "websocket_expected",
            "this is a WebSocket endpoint",
        ),
        "/presence" => match presence(&ctx).await {
            Ok(list) => {
                let catalog = &ctx.api.catalog;
                let now =
                    leitsystem_runtime::clock::Clock::now(&leitsystem_runtime::clock::SystemClock);
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "site": catalog.site_name,
                        "town": catalog.town,
                        "at": now,
                        "at_local": catalog.calendar.local_ddmmyyyy_hhmm(now),
                        "people": list,
                    }),
                )
            }
            Err(answer) => answer,
        },
        "/presence/evacuation" => match presence(&ctx).await {
            Ok(list) => evacuation(&ctx.api.catalog, &list),
            Err(answer) => answer,
        },
        "/devices" => devices(&ctx).await,
        "/tickets/{number}/reprint" => {
            let command = Command::Reprint {
                ticket: TicketNumber::new(params[0]),
            };
            run(&ctx, source, request_id, command).await
        }
        "/alarms/{seq}/acknowledge" => match params[0].parse::<u64>() {
            Ok(alarm) => {
                run(
                    &ctx,
                    source,
                    request_id,
                    Command::AcknowledgeAlarm { alarm },
                )
                .await
            }
            Err(_) => error(
                StatusCode::BAD_REQUEST,
                "invalid_alarm",
                format!("'{}' is not an alarm's seq (a number)", params[0]),
            ),
        },
        "/stats" => stats(&ctx).await,
        "/plugins" => {
            let devices = registry(&ctx.registry);
            let plugins: Vec<Value> = devices
                .iter()
                .map(|d| {
                    json!({"device": d.id, "role": d.role, "plugin": d.plugin,
                           "plugin_file": d.plugin_file, "state": d.state})
                })
                .collect();
            json_reply(StatusCode::OK, &json!({ "plugins": plugins }))
        }
        "/alarms" => alarms(&ctx).await,
        "/clock" => match ctx.engine.state_view().await {
            Ok(view) => json_reply(
                StatusCode::OK,
                &leitsystem_runtime::clock::clock_json(
                    &ctx.api.catalog.calendar,
                    view.clock_hold.as_ref(),
                    view.clock_wait.as_ref(),
                ),
            ),
            Err(_) => unavailable(),
        },
        "/clock/confirm" => run(&ctx, source, request_id, Command::ConfirmClock).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API route"),
    }
}

pub(crate) fn user_json(user: &User) -> Value {
    json!({"name": user.name, "role": user.role, "desks": user.desks})
}

pub(crate) async fn login(ctx: &Ctx, body: &[u8], ip: Option<IpAddr>) -> warp::reply::Response {
    #[derive(Deserialize)]
    struct Login {
        name: String,
        password: String,
    }
    let input: Login = match parse(body) {
        Ok(l) => l,
        Err(answer) => return answer,
    };
    if input.name.len() > 256 || input.password.len() > 1024 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "too long");
    }
    match ctx.api.auth.login(&input.name, &input.password, ip).await {
        Ok((token, user)) => {
            let reply = json_reply(StatusCode::OK, &user_json(&user));
            warp::reply::with_header(
                reply,
                "set-cookie",
                format!(
                    "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                    crate::auth::COOKIE,
                    ctx.api.auth.idle().as_secs()
                ),
            )
            .into_response()
        }
        Err(LoginError::Invalid) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_login",
            "wrong name or password",
        ),
        Err(LoginError::Locked(wait)) => too_many(
            "locked",
            wait,
            "too many failed logins from this computer; try again later",
        ),
        Err(LoginError::Busy) => too_many(
            "busy",
            Duration::from_secs(1),
            "too many logins at once; try again in a moment",
        ),
    }
}

pub(crate) async fn run(
    ctx: &Ctx,
    source: String,
    request_id: Option<String>,
    command: Command,
) -> warp::reply::Response {
    let request = CommandRequest {
        request_id,
        source,
        command,
    };
    match ctx.engine.execute(request).await {
        Ok(executed) => json_reply(
            StatusCode::OK,
            &json!({"outcome": executed.outcome, "duplicate": executed.duplicate}),
        ),
        Err(e) => execute_error(&e, &ctx.api.catalog),
    }
}
