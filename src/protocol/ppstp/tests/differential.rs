//! The scanner against the serde reference decoder ([`super::reference`]): both must give the
//! same outcome (request, error code, transaction id) for every body, whether it follows the
//! schema, bends it the way RFC 7846's examples do, or is broken at any byte.

use super::*;

/// Both decoders' outcomes for `body` ([`reference::agree`]).
fn agree(body: &[u8]) -> Result<(), String> {
    reference::agree(body, source())
}

fn assert_agree(body: &[u8]) {
    if let Err(e) = agree(body) {
        panic!("{e}");
    }
}

#[test]
fn examples_agree() {
    for body in [E1_BODY, E2, E3, E4_BODY, E5, E6, E7, E8] {
        assert_agree(body.as_bytes());
        // Every prefix: each way a body can end early.
        for end in 0..body.len() {
            assert_agree(&body.as_bytes()[..end]);
        }
    }
}

/// A FIND with `members` spliced into its message.
fn find_with(members: &str) -> String {
    format!(
        r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"FIND","transaction_id":"t","peer_id":"p","find":{{"swarm_id":"s"}}{members}}}}}"#
    )
}

#[test]
fn corner_cases_agree() {
    let tx = |t: &str| {
        format!(
            r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"KEEPALIVE","transaction_id":{t},"peer_id":"p"}}}}"#
        )
    };
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    // Transaction ids of every JSON type and number form.
    for t in [
        r#""x""#,
        "7",
        "0",
        "-0",
        "-7",
        "1.5",
        "1e2",
        "1E+2",
        "1.0",
        "2.5e-3",
        "1e400",
        "-1e400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.30000000000000004",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "+1",
        "null",
        "true",
        "[]",
        "{}",
        r#""\u0041\n""#,
        r#""\ud83d\ude00""#,
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\ud83dx""#,
        r#""\x""#,
        r#""\u12G4""#,
        "\"a\u{1}b\"",
        r#""é""#,
    ] {
        bodies.push(tx(t).into_bytes());
    }
    // Integers: numbers, strings, and what neither reads.
    for n in [
        "5",
        r#""5""#,
        r#""05""#,
        r#""""#,
        r#"" 5""#,
        r#""+5""#,
        r#""\u0035""#,
        "-5",
        "-0",
        "5.0",
        "5e0",
        "4294967295",
        "4294967296",
        r#""18446744073709551616""#,
        "null",
        "true",
        "[5]",
        "{}",
        "05",
    ] {
        bodies.push(find_with(&format!(r#","peer_num":{{"peer_count":{n}}}"#)).into_bytes());
    }
    for extra in [
        // Duplicates: read members twice (also after null) are errors; ignored ones are not.
        r#","version":1"#,
        r#","find":null"#,
        r#","unknown":1,"unknown":2"#,
        // Unknown members of every type, nested deep.
        r#","x":{"a":[1,{"b":null,"c":[true,false,"\ud800"]}],"d":-1.5e-7}"#,
        r#","x":"\u00zz""#,
        r#","x":[1,]"#,
        r#","x":{"a":1,}"#,
        r#","x":{"a" 1}"#,
        r#","x":{1:2}"#,
        r#","x":nul"#,
        r#","x":tru"#,
        r#","x":[}"#,
        r#","x":{]"#,
        // Top-level FIND members (example E5) beside `find`.
        r#","swarm_id":"other","peer_num":{"peer_count":3}"#,
        r#","peer_num":null"#,
        // Keys written with escapes.
        r#","pe\u0065r_num":{"peer_count":2}"#,
    ] {
        bodies.push(find_with(extra).into_bytes());
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    bodies.push(find_with(&format!(r#","x":{}"#, deep(5000))).into_bytes());
    bodies.push(find_with(&format!(r#","x":{}"#, "[{\"a\":".repeat(3000))).into_bytes());
    bodies.push(
        find_with(&format!(
            r#","x":{}1{}"#,
            "{\"a\":".repeat(300),
            "}".repeat(300)
        ))
        .into_bytes(),
    );
    // Struct members in serde's sequence form.
    for (members, kind) in [
        (r#""find":["s",null,null]"#, "FIND"),
        (r#""find":["s",null]"#, "FIND"),
        (r#""find":["s",["3"],[[1,2]]]"#, "FIND"),
        (r#""find":["s",null,null,null]"#, "FIND"),
        (r#""connect":[null]"#, "CONNECT"),
        (
            r#""connect":[null,[[["ipv4","10.0.0.1"],80,1,"HOST",null,null,null]]]"#,
            "CONNECT",
        ),
        (
            r#""connect":[null,null,[["s","JOIN","SEEDER"]]]"#,
            "CONNECT",
        ),
        (r#""connect":[]"#, "CONNECT"),
        (
            r#""connect":{"swarm_action":{"swarm_id":"s","action":"join","peer_mode":"seeder"}}"#,
            "CONNECT",
        ),
        (r#""connect":{"swarm_action":[]}"#, "CONNECT"),
        (
            r#""connect":{"peer_addr":{"ip_address":{"address_type":"ipv4","address":"10.0.0.1"},"port":"80"},"swarm_action":[{"swarm_id":"s","action":"LEAVE"}]}"#,
            "CONNECT",
        ),
        (r#""stat_report":["STREAM_STATS"]"#, "STAT_REPORT"),
        (r#""stat_report":{"stat":[],"Stat":[]}"#, "STAT_REPORT"),
        (
            r#""stat_report":{"Stat":{"swarm_id":"s","uploaded_bytes":"9"}}"#,
            "STAT_REPORT",
        ),
        (r#""stat_report":{"type":"OTHER","stat":5}"#, "STAT_REPORT"),
        (r#""leave":["s"]"#, "LEAVE"),
        (r#""join":["s","SEEDER"]"#, "JOIN"),
        (r#""join":["s","SEEDER",null]"#, "JOIN"),
        (r#""disconnect":[null]"#, "DISCONNECT"),
        (r#""disconnect":{"swarm_id":"ALL"}"#, "DISCONNECT"),
        (
            r#""join_chunk":{"swarm_id":"s","chunks":[[1,2],[3]]}"#,
            "JOIN_CHUNK",
        ),
        (
            r#""join_chunk":{"swarm_id":"s","chunks":[[1,2,3]]}"#,
            "JOIN_CHUNK",
        ),
        (
            r#""join_chunk":{"swarm_id":"s","chunks":[[5,2]]}"#,
            "JOIN_CHUNK",
        ),
        (r#""join_chunk":{"swarm_id":"s","chunks":{}}"#, "JOIN_CHUNK"),
        (r#""stat_query":["s",null]"#, "STAT_QUERY"),
    ] {
        bodies.push(format!(r#"{{"PPSPTrackerProtocol":{{"version":1,"request_type":"{kind}","transaction_id":"t","peer_id":"p",{members}}}}}"#).into_bytes());
    }
    // The envelope itself.
    for body in [
        "", " ", "{}", "[]", "null", r#"{"PPSPTrackerProtocol":null}"#,
        r#"[{"version":1,"request_type":"KEEPALIVE","transaction_id":"t","peer_id":"p"}]"#,
        r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"KEEPALIVE","transaction_id":"t","peer_id":"p"}} "#,
        r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"KEEPALIVE","transaction_id":"t","peer_id":"p"}} x"#,
        r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"KEEPALIVE","transaction_id":"t","peer_id":"p"}}{}"#,
        r#"{"PPSPTrackerProtocol":{"version":1,"request_type":"KEEPALIVE","transaction_id":"t","peer_id":"p"},"PPSPTrackerProtocol":{}}"#,
        r#"{"x":[[[]]],"PPSPTrackerProtocol":{"version":2,"transaction_id":"t"}}"#,
        "\u{feff}{\"PPSPTrackerProtocol\":{}}",
        "{\"PPSPTrackerProtocol\":{\"version\":1,\"request_type\":\"KEEPALIVE\",\"transaction_id\":\"t\",\"peer_id\":\"p\u{7f}\"}}",
        "\t\r\n{\"PPSPTrackerProtocol\"\t:\r{\"version\" :1 , \"request_type\":\"KEEPALIVE\",\"transaction_id\":\"t\",\"peer_id\":\"p\"}\n}\n",
        "{\"PPSPTrackerProtocol\":{\"version\":1,\"request_type\":\"KEEPALIVE\",\"transaction_id\":\"t\",\"peer_id\":\"p\"}\u{c}}",
    ] {
        bodies.push(body.as_bytes().to_vec());
    }
    // Invalid UTF-8 in a read string, an ignored string and a key.
    let find = find_with(r#","x":"IGN""#);
    for (from, bad) in [
        ("\"p\"", &b"\"p\xff\""[..]),
        ("IGN", b"\xc3("),
        ("\"x\"", b"\"\xe2\x82\""),
        ("\"s\"", b"\"\xed\xa0\x80\""),
    ] {
        let at = find.find(from).expect("marker");
        let mut body = find.as_bytes()[..at].to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(&find.as_bytes()[at + from.len()..]);
        bodies.push(body);
    }
    for body in &bodies {
        assert_agree(body);
    }
}

// ---- generated and mutated bodies ------------------------------------------------------------

/// A JSON value with its members in order (duplicates allowed) and numbers kept as text.
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn from_value(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(n) => J::Num(n.to_string()),
        Value::String(s) => J::Str(s.clone()),
        Value::Array(a) => J::Arr(a.iter().map(from_value).collect()),
        Value::Object(o) => J::Obj(o.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()),
    }
}

const KEYS: &[&str] = &[
    "PPSPTrackerProtocol",
    "version",
    "request_type",
    "transaction_id",
    "peer_id",
    "connect",
    "find",
    "swarm_id",
    "peer_num",
    "stat_report",
    "join",
    "leave",
    "disconnect",
    "join_chunk",
    "stat_query",
    "peer_count",
    "ability_nat",
    "concurrent_links",
    "online_time",
    "upload_bandwidth",
    "ip_address",
    "address_type",
    "address",
    "port",
    "priority",
    "type",
    "connection",
    "asn",
    "peer_protocol",
    "action",
    "peer_mode",
    "peer_addr",
    "swarm_action",
    "chunks",
    "stat",
    "Stat",
    "uploaded_bytes",
    "downloaded_bytes",
    "available_bandwidth",
    "x",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "-1",
    "-0",
    "1.0",
    "1e2",
    "0.5",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "-9223372036854775809",
];

const STRINGS: &[&str] = &[
    "",
    "1",
    "007",
    "80",
    "FIND",
    "CONNECT",
    "JOIN",
    "LEAVE",
    "DISCONNECT",
    "KEEPALIVE",
    "JOIN_CHUNK",
    "STAT_QUERY",
    "STAT_REPORT",
    "SEEDER",
    "leech",
    "ipv4",
    "IPv6",
    "198.51.100.7",
    "2001:db8::1",
    "HOST",
    "proxy",
    "REFLEXIVE",
    "wired",
    "STUN",
    "no_nat",
    "ALL",
    "STREAM_STATS",
    "PPSP-PP",
    "swarm-\u{e9}",
    "\u{1F600}",
    "a\u{0}b",
    "tab\there",
    "0123456789abcdef0",
];

/// An interesting leaf (or small container) chosen by `pick`.
fn leaf(pick: u32) -> J {
    let p = pick as usize;
    match p % 6 {
        0 => J::Num(NUMBERS[p / 6 % NUMBERS.len()].to_string()),
        1 | 2 => J::Str(STRINGS[p / 6 % STRINGS.len()].to_string()),
        3 => match p / 6 % 5 {
            0 => J::Null,
            1 => J::Bool(p % 2 == 0),
            2 => J::Arr(vec![]),
            3 => J::Obj(vec![]),
            _ => J::Arr(vec![J::Arr(vec![J::Num("1".into()), J::Num("5".into())])]),
        },
        4 => J::Str("x".repeat(60 + p / 6 % 10)),
        _ => {
            // Nested containers, in an ignored or a read position.
            let mut v = J::Num("1".into());
            for d in 0..(p / 6 % 200) {
                v = if d % 2 == 0 {
                    J::Arr(vec![v])
                } else {
                    J::Obj(vec![("k".into(), v)])
                };
            }
            v
        }
    }
}

fn count(j: &J) -> usize {
    1 + match j {
        J::Arr(a) => a.iter().map(count).sum(),
        J::Obj(o) => o.iter().map(|(_, v)| count(v)).sum(),
        _ => 0,
    }
}

/// The node at pre-order index `at`.
fn node(j: &mut J, at: usize) -> &mut J {
    fn walk<'j>(j: &'j mut J, at: &mut usize) -> Option<&'j mut J> {
        if *at == 0 {
            return Some(j);
        }
        *at -= 1;
        match j {
            J::Arr(a) => a.iter_mut().find_map(|v| walk(v, at)),
            J::Obj(o) => o.iter_mut().find_map(|(_, v)| walk(v, at)),
            _ => None,
        }
    }
    let mut at = at;
    walk(j, &mut at).expect("index below count")
}

/// One structural edit at a node: replace, duplicate, drop or add members, wrap, change number
/// and string forms, turn an object into its values.
fn edit(j: &mut J, at: u32, op: u8, pick: u32) {
    let n = count(j);
    let target = node(j, at as usize % n);
    match (op % 9, &mut *target) {
        (0, t) => *t = leaf(pick),
        (1, J::Obj(o)) if !o.is_empty() => {
            let (k, v) = o[pick as usize % o.len()].clone();
            let v = if pick % 3 == 0 { J::Null } else { v };
            o.insert(pick as usize % (o.len() + 1), (k, v));
        }
        (2, J::Obj(o)) if !o.is_empty() => {
            o.remove(pick as usize % o.len());
        }
        (3, J::Obj(o)) => {
            let k = KEYS[pick as usize % KEYS.len()].to_string();
            o.insert(pick as usize % (o.len() + 1), (k, leaf(pick / 7)));
        }
        (4, t) => *t = J::Arr(vec![t.clone()]),
        (5, J::Obj(o)) => {
            let values = o.iter().map(|(_, v)| v.clone()).collect();
            *target = J::Arr(values);
        }
        (6, J::Num(s)) if !s.starts_with('-') => *target = J::Str(s.clone()),
        (6, J::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            *target = J::Num(s.trim_start_matches('0').to_string()).min_num()
        }
        (7, J::Arr(a)) if !a.is_empty() => *target = a[0].clone(),
        (8, J::Obj(o)) if !o.is_empty() => {
            // Rename a member (to another known key, or a near miss).
            let i = pick as usize % o.len();
            o[i].0 = if pick % 4 == 0 {
                o[i].0.to_uppercase()
            } else {
                KEYS[pick as usize / 4 % KEYS.len()].to_string()
            };
        }
        _ => {}
    }
}

impl J {
    /// A number with its leading zeros stripped stays a valid JSON number.
    fn min_num(self) -> J {
        match self {
            J::Num(s) if s.is_empty() => J::Num("0".into()),
            j => j,
        }
    }
}

/// Writes `j` as JSON; `style` picks whitespace and how each character of a string is written
/// (itself, a `\u` escape, or a short escape).
fn render(j: &J, style: &[u8], k: &mut usize, out: &mut Vec<u8>) {
    let mut next = || {
        *k += 1;
        style.get(*k % style.len().max(1)).copied().unwrap_or(0)
    };
    let ws = |b: u8, out: &mut Vec<u8>| {
        out.extend_from_slice(match b % 16 {
            0 => b" ",
            1 => b"\n  ",
            2 => b"\t",
            3 => b"\r\n",
            _ => b"",
        })
    };
    fn string(s: &str, style: &mut dyn FnMut() -> u8, out: &mut Vec<u8>) {
        out.push(b'"');
        for c in s.chars() {
            let b = style();
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || b % 8 == 0 => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                    }
                }
                '/' if b % 2 == 0 => out.extend_from_slice(b"\\/"),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.push(b'"');
    }
    let b = next();
    ws(b, out);
    match j {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        J::Num(s) => out.extend_from_slice(s.as_bytes()),
        J::Str(s) => string(s, &mut next, out),
        J::Arr(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render(v, style, k, out);
            }
            out.push(b']');
        }
        J::Obj(o) => {
            out.push(b'{');
            for (i, (key, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let mut next = || {
                    *k += 1;
                    style.get(*k % style.len().max(1)).copied().unwrap_or(0)
                };
                string(key, &mut next, out);
                out.push(b':');
                render(v, style, k, out);
            }
            out.push(b'}');
        }
    }
    let b = style
        .get((*k + 1) % style.len().max(1))
        .copied()
        .unwrap_or(0);
    ws(b / 16, out);
}

/// Bytes a byte-level mutation writes: JSON punctuation, digits, escapes, bad UTF-8.
const BYTES: &[u8] = b"{}[]\",:\\u0 \n-.eE19\x00\x1f\x7f\x80\xc3\xed\xffnAa";

fn seeds() -> Vec<J> {
    let mut seeds: Vec<J> = [E1_BODY, E2, E3, E5, E7]
        .iter()
        .map(|b| from_value(&serde_json::from_str(b).expect("example parses")))
        .collect();
    seeds.push(from_value(
        &serde_json::from_str(&find_with("")).expect("FIND parses"),
    ));
    seeds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Requests the encoder writes, edited structurally, rendered with varied whitespace and
    /// escapes, then perhaps broken at a few bytes: both decoders agree.
    #[test]
    fn scanner_agrees_with_serde_on_edited_requests(
        peer_id in arb_peer(),
        kind in arb_kind(),
        t in arb_txid(),
        seed in 0usize..8,
        edits in prop::collection::vec((any::<u32>(), any::<u8>(), any::<u32>()), 0..4),
        style in prop::collection::vec(any::<u8>(), 1..32),
        bytes in prop::collection::vec((any::<prop::sample::Index>(), 0usize..BYTES.len(), 0u8..3), 0..3),
    ) {
        let mut j = match seeds().get(seed) {
            Some(j) => j.clone(),
            None => {
                let request = Request { peer_id, source: source(), kind };
                let mut body = Vec::new();
                encode_request(&request, &t, &mut body);
                from_value(&serde_json::from_slice(&body).expect("our encoding parses"))
            }
        };
        for (at, op, pick) in edits {
            edit(&mut j, at, op, pick);
        }
        let mut body = Vec::new();
        render(&j, &style, &mut 0, &mut body);
        prop_assert!(agree(&body).is_ok(), "{}", agree(&body).unwrap_err());
        for (at, b, op) in bytes {
            if body.is_empty() {
                break;
            }
            let i = at.index(body.len());
            match op {
                0 => body[i] = BYTES[b],
                1 => body.insert(i, BYTES[b]),
                _ => {
                    body.remove(i);
                }
            }
            prop_assert!(agree(&body).is_ok(), "{}", agree(&body).unwrap_err());
        }
    }

    /// Arbitrary bytes, and arbitrary bytes after a valid envelope's opening.
    #[test]
    fn scanner_agrees_with_serde_on_arbitrary_bytes(
        tail in prop::collection::vec(any::<u8>(), 0..64),
        prefix in 0usize..3,
    ) {
        let mut body = [&b""[..], b"{\"PPSPTrackerProtocol\":{", b"{\"PPSPTrackerProtocol\":{\"version\":1,\"transaction_id\":"][prefix].to_vec();
        body.extend_from_slice(&tail);
        prop_assert!(agree(&body).is_ok(), "{}", agree(&body).unwrap_err());
    }
}

/// The byte-level control-character test of ids matches `char::is_control` for every
/// character, alone and between others.
#[test]
fn control_characters_are_found_byte_by_byte() {
    for c in (0..=0x10_ffffu32).filter_map(char::from_u32) {
        let mut buf = [0u8; 4];
        let alone = c.encode_utf8(&mut buf).as_bytes().to_vec();
        assert_eq!(
            super::super::decode::has_control(&alone),
            c.is_control(),
            "{c:?}"
        );
        for framed in [
            format!("a\u{e9}{c}\u{a0}z"),
            format!("abcdefg{c}hijklmnopq"),
        ] {
            let found = super::super::decode::has_control(framed.as_bytes());
            assert_eq!(found, c.is_control(), "{c:?} in {framed:?}");
        }
    }
}

/// Strings of every length around the eight-byte steps, with each special byte at each
/// position: both decoders agree (ids are read strings, `x` an ignored one).
#[test]
fn strings_agree_at_every_position() {
    for len in 0..20 {
        for at in 0..len {
            for special in [b'"', b'\\', 0x01, 0x1f, 0x7f, 0x80, 0xc3, 0xe9, b'a'] {
                let mut text = vec![b'p'; len];
                text[at] = special;
                if special == 0xc3 && at + 1 < len {
                    text[at + 1] = 0xa9;
                }
                for member in ["peer_id", "x"] {
                    let mut body = br#"{"PPSPTrackerProtocol":{"version":1,"request_type":"KEEPALIVE","transaction_id":"t",""#.to_vec();
                    body.extend_from_slice(member.as_bytes());
                    body.extend_from_slice(b"\":\"");
                    body.extend_from_slice(&text);
                    body.extend_from_slice(b"\"}}");
                    assert_agree(&body);
                }
            }
        }
    }
}
