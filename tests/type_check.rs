//! The message-type check of a typed `open`: the same struct defined in two programs (so in
//! two module paths) matches by default; the strict mode tells them apart.

mod common;

use common::uniq;
use serde::{Deserialize, Serialize};
use shmq::{Error, Options, Queue};

mod producer {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    pub struct LogLine {
        pub level: u8,
        pub text: String,
    }
}

mod consumer {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    pub struct LogLine {
        pub level: u8,
        pub text: String,
    }
}

#[derive(Serialize, Deserialize)]
struct Event(u64);

#[test]
fn same_struct_in_two_modules_opens_by_default() {
    let name = uniq("default");
    let q: Queue<producer::LogLine> = Queue::create(&name, 4096).unwrap();
    q.put(&producer::LogLine {
        level: 3,
        text: "disk almost full".into(),
    })
    .unwrap();
    let r: Queue<consumer::LogLine> = Queue::open(&name).unwrap();
    assert_eq!(
        r.get().unwrap(),
        consumer::LogLine {
            level: 3,
            text: "disk almost full".into()
        }
    );
    // Collections of it too.
    let v = uniq("vec");
    let _qv: Queue<Vec<producer::LogLine>> = Queue::create(&v, 4096).unwrap();
    let _rv: Queue<Vec<consumer::LogLine>> = Queue::open(&v).unwrap();
}

#[test]
fn another_type_is_still_incompatible() {
    let name = uniq("other");
    let _q: Queue<producer::LogLine> = Queue::create(&name, 4096).unwrap();
    match Queue::<Event>::open(&name) {
        Err(Error::Incompatible { reason, .. }) => {
            assert!(
                reason.contains("LogLine") && reason.contains("Event"),
                "{reason}"
            );
            assert!(reason.contains("without module paths"), "{reason}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert!(matches!(
        Queue::<u64>::open(&name),
        Err(Error::Incompatible { .. })
    ));
}

#[test]
fn strict_mode_compares_module_paths() {
    let name = uniq("strict");
    let _q: Queue<producer::LogLine> = Queue::create(&name, 4096).unwrap();
    let strict = Options::new().strict_type_check(true);
    match Queue::<consumer::LogLine>::open_with(name.as_str(), &strict) {
        Err(Error::Incompatible { reason, .. }) => {
            assert!(reason.contains("consumer::LogLine"), "{reason}")
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    Queue::<producer::LogLine>::open_with(name.as_str(), &strict).unwrap();
    // check_type(false) still skips the check altogether.
    Queue::<Event>::open_with(name.as_str(), &Options::new().check_type(false)).unwrap();
}
