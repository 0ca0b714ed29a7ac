//! The benchmark thread's CPU time as a criterion measurement (`QIAO_BENCH_CLOCK=cpu`),
//! shared by the pipeline and transform benches: on a shared machine preemption moves wall
//! time, not CPU time.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time of the calling thread, in nanoseconds, as the scheduler accounts it.
pub fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("thread CPU time needs Linux /proc");
    text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat starts with the run time in ns")
}

/// Criterion measurement: the benchmark thread's CPU time (values in ns, like wall time,
/// so criterion's own duration and throughput formatting applies).
pub struct ThreadCpuTime {
    pub wall: WallTime,
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}
