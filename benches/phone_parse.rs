//! What parsing a phone number with libphonenumber's rules costs, next to
//! the GetWindow call it sits in (each call parses two numbers).
//!
//! In one run: the median of 5,000 GetWindow calls on one stream against a
//! release wagate over loopback, then `PhoneNumber::parse` over numbers from
//! many countries: the first parse of each country (its patterns compile on
//! first use), numbers not seen lately (distinct NANP numbers: valid ones,
//! and ones valid only after libphonenumber's full rules, the costliest as
//! +1 is shared by 25 regions) and numbers seen lately (remembered). Prints
//! each and its ratio to the call.

mod support;

use std::time::{Duration, Instant};

use support::{BUSINESS, Process, Sample, customer, get_window, unusual_customer};
use wagate::domain::PhoneNumber;

const CALLS: u64 = 5_000;
const PARSES: usize = 200_000;
/// Distinct numbers, more than wagate remembers, so none is remembered.
const NEW_NUMBERS: u64 = 50_000;

/// One number per country, as callers write them.
const NUMBERS: &[&str] = &[
    "+27 82 123 4567",
    "+44 (0) 20 7946 0958",
    "+1 (555) 000-1111",
    "+49 30 1234567",
    "+33 6 12 34 56 78",
    "+55 11 91234-5678",
    "+91 98765 43210",
    "+234 803 123 4567",
    "+62 812-3456-7890",
    "+52 55 1234 5678",
    "+39 06 6982 1234",
    "+81 90-1234-5678",
    "+971 50 123 4567",
    "+254 712 345678",
    "+61 412 345 678",
    "+34 612 34 56 78",
];

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let call = runtime.block_on(get_window_median());

    let started = Instant::now();
    for raw in NUMBERS {
        PhoneNumber::parse(raw).expect("a valid number");
    }
    let first = started.elapsed() / NUMBERS.len() as u32;

    let started = Instant::now();
    for n in 0..PARSES {
        std::hint::black_box(PhoneNumber::parse(NUMBERS[n % NUMBERS.len()]).unwrap());
    }
    let steady = started.elapsed() / PARSES as u32;

    let started = Instant::now();
    for n in 0..NEW_NUMBERS {
        std::hint::black_box(PhoneNumber::parse(&customer(7_000_000 + n)).unwrap());
    }
    let new = started.elapsed() / NEW_NUMBERS as u32;

    let started = Instant::now();
    for n in 0..NEW_NUMBERS {
        std::hint::black_box(PhoneNumber::parse(&unusual_customer(n)).unwrap());
    }
    let unusual = started.elapsed() / NEW_NUMBERS as u32;

    println!("GetWindow, 1 stream, median     {:>10.1} µs", micros(call));
    println!(
        "parse, first use of a country   {:>10.1} µs  ({:.2} of a call)",
        micros(first),
        ratio(first, call)
    );
    println!(
        "parse, a NANP number not seen lately {:>5.1} µs  ({:.3} of a call)",
        micros(new),
        ratio(new, call)
    );
    println!(
        "  the same, not valid as written {:>5.1} µs  ({:.3} of a call; libphonenumber's full rules)",
        micros(unusual),
        ratio(unusual, call)
    );
    println!(
        "parse, a number seen lately     {:>10.1} µs  ({:.3} of a call; 2 per call: {:.3})",
        micros(steady),
        ratio(steady, call),
        2.0 * ratio(steady, call)
    );
}

async fn get_window_median() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::wagate(dir.path(), &[]);
    let mut client = support::channels(server.addr, 1).await.remove(0);
    // Warm the connection and the server's own metadata.
    for n in 0..100 {
        client.get_window(get_window(customer(n))).await.unwrap();
    }
    let mut sample = Sample::new();
    let started = Instant::now();
    for n in 0..CALLS {
        let call = Instant::now();
        let request = get_window(customer(n));
        assert_eq!(request.business_number, BUSINESS);
        client.get_window(request).await.unwrap();
        sample
            .latencies
            .record(call.elapsed().as_micros() as u64)
            .unwrap();
    }
    sample.elapsed = started.elapsed();
    server.stop();
    Duration::from_secs_f64(sample.ms(0.5) / 1000.0)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ratio(part: Duration, whole: Duration) -> f64 {
    part.as_secs_f64() / whole.as_secs_f64()
}
