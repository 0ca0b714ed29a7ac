//! How a replay is told: lines for a person, one JSON document for a machine, JUnit XML for CI.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde_json::json;

use super::diff;
use super::{Replayed, Status, Summary};

/// The lines for one message that did not stay the same; nothing for an unchanged one.
pub fn text(r: &Replayed, colour: bool) -> String {
    let mut s = String::new();
    let (mark, word) = match r.status {
        Status::Unchanged => return s,
        Status::Changed => ("~", "changed"),
        Status::NowRejected => ("!", "now rejected"),
        Status::NowAccepted => ("+", "now accepted"),
        Status::Skipped => ("-", "skipped"),
    };
    let (bold, off) = if colour { ("\x1b[1m", "\x1b[0m") } else { ("", "") };
    let _ = writeln!(s, "{bold}{mark} {} {}{off} ({}, received {})", word, r.id, r.route, r.received_at);
    if let Some(d) = &r.detail {
        let _ = writeln!(s, "    {d}");
    }
    s.push_str(&destinations(r, colour));
    s
}

fn destinations(r: &Replayed, colour: bool) -> String {
    let mut s = String::new();
    for d in &r.destinations {
        match d.change {
            "now_chosen" => {
                let _ = writeln!(s, "    {} (destination {}): now sent the message, not before", d.system, d.index);
            }
            "no_longer_chosen" => {
                let _ = writeln!(s, "    {} (destination {}): no longer sent the message", d.system, d.index);
            }
            _ => {
                let _ = writeln!(s, "    {} (destination {}):", d.system, d.index);
                s.push_str(&diff::render(&d.fields, "      ", colour));
            }
        }
    }
    s
}

/// The noise found by `--detect-noise`, with the lines that would silence it.
pub fn noise(noise: &BTreeMap<String, usize>) -> String {
    if noise.is_empty() {
        return "noise: none found (two runs of every message gave the same outputs)\n".into();
    }
    let mut s = String::from("noise: these fields differ between two runs of the same message (a clock, a generated id):\n");
    for (p, n) in noise {
        let _ = writeln!(s, "    {p}   ({n} message{})", if *n == 1 { "" } else { "s" });
    }
    s.push_str("silence them with\n    ");
    s.push_str(&noise.keys().map(|p| format!("--ignore '{p}'")).collect::<Vec<_>>().join(" "));
    s.push_str("\nor in the route's config:\n    replay:\n      ignore:\n");
    for p in noise.keys() {
        let _ = writeln!(s, "        - \"{p}\"");
    }
    s
}

/// The whole replay as one JSON document: every message (unchanged ones too), the summary,
/// the noise.
pub fn json(messages: &[Replayed], summary: &Summary, noise: Option<&BTreeMap<String, usize>>) -> serde_json::Value {
    let mut v = json!({"messages": messages, "summary": summary});
    if let Some(n) = noise {
        v["noise"] = json!(n.iter().map(|(p, c)| json!({"pointer": p, "messages": c})).collect::<Vec<_>>());
    }
    v
}

/// JUnit XML: one test case per message (named by its id, classed by its route); a change
/// is a failure whose text is the diff; a message that could not be replayed is skipped.
pub fn junit(messages: &[Replayed], summary: &Summary) -> Result<String, String> {
    let mut suite = TestSuite::new("qiao replay");
    for r in messages {
        let status = match r.status {
            Status::Unchanged => TestCaseStatus::success(),
            Status::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.detail.clone().unwrap_or_default());
                s
            }
            status => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let kind = match status {
                    Status::NowRejected => "now-rejected",
                    Status::NowAccepted => "now-accepted",
                    _ => "changed",
                };
                s.set_type(kind);
                let pointers: Vec<String> = r
                    .destinations
                    .iter()
                    .flat_map(|d| {
                        let who = d.system.clone();
                        d.fields.iter().map(move |f| format!("{who} {}", f.pointer))
                    })
                    .collect();
                s.set_message(r.detail.clone().unwrap_or_else(|| format!("changed: {}", pointers.join(", "))));
                let mut text = r.detail.clone().map(|d| format!("{d}\n")).unwrap_or_default();
                text.push_str(&destinations(r, false));
                s.set_description(text);
                s
            }
        };
        let mut case = TestCase::new(r.id.clone(), status);
        case.set_classname(format!("replay.{}", r.route));
        suite.add_test_case(case);
    }
    suite.add_property(quick_junit::Property::new("summary", summary.line()));
    let mut report = Report::new("qiao replay");
    report.add_test_suite(suite);
    report.to_string().map_err(|e| e.to_string())
}
