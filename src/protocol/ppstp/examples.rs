//! RFC 7846 §4.1's eight example messages, verbatim (the RFC's left margin removed, page
//! breaks cut), for tests, benches and fuzz seeds: the one copy in the project. E1 and E4 are
//! whole HTTP messages (with `\r\n` line ends, as on the wire); the others are JSON bodies.
//! [`by_name`] gives each as the RFC prints it.
//!
//! The examples break the RFC's own schema in places (objects where arrays are specified,
//! integers as strings, `"Stat"` for `stat`, FIND members at the top level) and their
//! Content-Length values do not match their bodies; the decoder accepts them all.

/// E1: CONNECT, SEEDER joins 1111 and 2222: the HTTP head (the body is [`E1_BODY`]).
pub const E1_HEAD: &str = "POST https://tracker.example.com/video_1 HTTP/1.1\r\nHost: tracker.example.com\r\nContent-Length: 494\r\nContent-Type: application/ppsp-tracker+json\r\nAccept: application/ppsp-tracker+json\r\n\r\n";
/// E1: CONNECT, SEEDER joins 1111 and 2222: the body.
pub const E1_BODY: &str = r#"{
  "PPSPTrackerProtocol": {
    "version":              1,
    "request_type":         "CONNECT",
    "transaction_id":       "12345",
    "peer_id":              "656164657220",
    "connect":{
        "peer_addr": {
               "ip_address": {
                    "address_type":     "ipv4",
                    "address":          "192.0.2.2"
               },
               "port":         80,
               "priority":     1,
               "type":         "HOST",
               "connection":   "wired",
               "asn":          "45645"
        },
        "swarm_action": [{
            "swarm_id":       "1111",
            "action":         "JOIN",
            "peer_mode":      "SEEDER"
        },
        {
            "swarm_id":       "2222",
            "action":         "JOIN",
            "peer_mode":      "SEEDER"
        }]
    }
  }
}
"#;

/// E2: CONNECT body, LEECH joins 1111, two interfaces.
pub const E2: &str = r#"{
  "PPSPTrackerProtocol": {
    "version":               1,
    "request_type":          "CONNECT",
    "transaction_id":        "12345.0",
    "peer_id":               "656164657221",
    "connect":{
        "peer_num": {
            "peer_count":        5,
            "ability_nat":       "STUN",
            "concurrent_links":  "5",
            "online_time":       "200",
            "upload_bandwidth":  "600"
         },
         "peer_addr": [{
               "ip_address": {
                    "address_type":     "ipv4",
                    "address":          "192.0.2.2"
               },
               "port":         80,
               "priority":     1,
               "type":         "HOST",
               "connection":   "wired",
               "asn":          "3256546"
         },
         {
               "ip_address":{
                   "address_type":     "ipv6",
                   "address":          "2001:db8::2"
               },
               "port":         80,
               "priority":     2,
               "type":         "HOST",
               "connection":   "wireless",
               "asn":          "34563456",
               "peer_protocol": "PPSP-PP"
         }],
         "swarm_action": {
            "swarm_id":       "1111",
            "action":         "JOIN",
            "peer_mode":      "LEECH"
         }
    }
  }
}
"#;

/// E3: CONNECT body, LEAVE 1111 + JOIN 2222.
pub const E3: &str = r#"{
  "PPSPTrackerProtocol": {
    "version":              1,
    "request_type":         "CONNECT",
    "transaction_id":       "12345",
    "peer_id":              "656164657221",
    "connect":{
        "peer_num": {
            "peer_count":        5,
            "ability_nat":       "STUN",
            "concurrent_links":  "5",
            "online_time":       "200",
            "upload_bandwidth":  "600"
        },
        "swarm_action": [{
            "swarm_id":          "1111",
            "action":            "LEAVE",
            "peer_mode":         "LEECH"
        },
        {
            "swarm_id":          "2222",
            "action":            "JOIN",
            "peer_mode":         "LEECH"
        }]
    }
  }
}
"#;

/// E4: Response to E3: the HTTP head (the body is [`E4_BODY`]).
pub const E4_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Length: 1342\r\nContent-Type: application/ppsp-tracker+json\r\n\r\n";
/// E4: Response to E3: the body.
pub const E4_BODY: &str = r#"{
  "PPSPTrackerProtocol": {
    "version":               1,
    "response_type":         0,
    "error_code":            0,
    "transaction_id":        "12345",
    "peer_addr": {
        "ip_address": {
            "address_type":     "ipv4",
            "address":          "198.51.100.1"
        },
        "port":          80,
        "priority":      1,
        "asn":           "64496"
   },
   "swarm_result": {
        "swarm_id":        "2222",
        "result":          0,
        "peer_group": {
            "peer_info": [{
                "peer_id":    "956264622298",
                "peer_addr": {
                    "ip_address": {
                        "address_type":     "ipv4",
                        "address":          "198.51.100.22"
                    },
                    "port":          80,
                    "priority":      2,
                    "type":          "REFLEXIVE",
                    "connection":    "wired",
                    "asn":           "64496",
                    "peer_protocol": "PPSP-PP"
                }
            },
            {
                "peer_id":    "3332001256741",
                "peer_addr": {
                    "ip_address": {
                        "address_type":     "ipv4",
                        "address":          "198.51.100.201"
                    },
                    "port":          80,
                    "priority":      2,
                    "type":          "REFLEXIVE",

                    "connection":    "wired",
                    "asn":           "64496",
                    "peer_protocol": "PPSP-PP"
                }
            }]
          }
       }
   }
}
"#;

/// E5: FIND request body.
pub const E5: &str = r#"{
  "PPSPTrackerProtocol": {
      "version":             1,
      "request_type":        "FIND",
      "transaction_id":      "12345",
      "peer_id":             "656164657221",
      "swarm_id":            "1111",
      "peer_num": {
          "peer_count":        5,
          "ability_nat":       "STUN",
          "concurrent_links":  "5",
          "online_time":       "200",
          "upload_bandwidth":  "600"
      }
  }
}
"#;

/// E6: Response body to E5.
pub const E6: &str = r#"{
  "PPSPTrackerProtocol": {
      "version":             1,
      "response_type":       0,
      "error_code":          0,
      "transaction_id":      "12345",
      "swarm_result": {
          "swarm_id":        "1111",
          "result":          0,
          "peer_group": {
              "peer_info": [{

                  "peer_id":    "656164657221",
                  "peer_addr": {
                      "ip_address": {
                          "address_type":     "ipv4",
                          "address":          "198.51.100.1"
                      },
                      "port":          80,
                      "priority":      1,
                      "type":          "REFLEXIVE",
                      "connection":    "wireless",
                      "asn":           "64496"
                  }
              },
              {
                  "peer_id":    "956264622298",
                  "peer_addr": {
                      "ip_address": {
                          "address_type":     "ipv4",
                          "address":          "198.51.100.22"
                      },
                      "port":          80,
                      "priority":      1,
                      "type":          "REFLEXIVE",
                      "connection":    "wireless",
                      "asn":           "64496"
                  }
              },
              {
                  "peer_id":    "3332001256741",
                  "peer_addr": {
                      "ip_address": {
                          "address_type":     "ipv4",
                          "address":          "198.51.100.201"
                      },
                      "port":          80,
                      "priority":      1,
                      "type":          "REFLEXIVE",

                      "connection":    "wireless",
                      "asn":           "64496"
                  }
              }]
          }
      }
  }
}
"#;

/// E7: STAT_REPORT request body.
pub const E7: &str = r#"{
  "PPSPTrackerProtocol": {
      "version":             1,
      "request_type":        "STAT_REPORT",
      "transaction_id":      "12345",
      "peer_id":             "656164657221",
      "stat_report": {
          "type":  "STREAM_STATS",
          "Stat": {
                "swarm_id":              "1111",
                "uploaded_bytes":        512,
                "downloaded_bytes":      768,
                "available_bandwidth":   1024000,
                "concurrent_links":      5
          }
      }
  }
}
"#;

/// E8: Response body to E7.
pub const E8: &str = r#"{
  "PPSPTrackerProtocol": {
      "version":              1,
      "response_type":        0,
      "error_code":           0,
      "transaction_id":       "12345",
      "swarm_result": {
          "swarm_id":     "1111",
          "result":       0
      }
  }
}
"#;

/// Every example by its RFC name: the HTTP head (E1 and E4 only) and the body.
pub const ALL: [(&str, Option<&str>, &str); 8] = [
    ("E1", Some(E1_HEAD), E1_BODY),
    ("E2", None, E2),
    ("E3", None, E3),
    ("E4", Some(E4_HEAD), E4_BODY),
    ("E5", None, E5),
    ("E6", None, E6),
    ("E7", None, E7),
    ("E8", None, E8),
];

/// The example called `name` (`"E1"` to `"E8"`) as the RFC prints it: the head, if any, with
/// `\n` line ends, then the body. `None` for another name.
pub fn by_name(name: &str) -> Option<String> {
    let (_, head, body) = ALL.iter().find(|(n, _, _)| *n == name)?;
    let head = head.map(|h| h.replace("\r\n", "\n")).unwrap_or_default();
    Some(head + body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_joins_the_head_in_the_rfc_s_line_ends() {
        let e1 = by_name("E1").unwrap();
        assert!(e1.starts_with("POST https://tracker.example.com/video_1 HTTP/1.1\nHost:"));
        assert!(e1.ends_with(E1_BODY));
        assert!(!e1.contains('\r'));
        assert_eq!(by_name("E8").as_deref(), Some(E8));
        assert_eq!(by_name("E9"), None);
    }
}
