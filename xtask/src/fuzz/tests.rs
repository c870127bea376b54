use super::*;

#[test]
fn parses_libfuzzer_stats() {
    let log = "INFO: Seed: 1\n\
            #2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
            #4096\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 4 exec/s: 2048 rss: 50Mb\n\
            #70000\tDONE   cov: 130 ft: 310 corp: 45/3Kb lim: 40 exec/s: 2333 rss: 60Mb\n\
            Done 70000 runs in 30 second(s)\n\
            stat::number_of_executed_units: 70000\n\
            stat::average_exec_per_sec:     2333\n\
            stat::new_units_added:          44\n";
    assert_eq!(
        parse_stats(log),
        Stats {
            runs: Some(70000),
            exec_per_sec: Some(2333),
            new_units: Some(44),
            cov: Some(130),
            features: Some(310),
            corpus: Some(45),
        }
    );
    assert_eq!(parse_stats(""), Stats::default());
}
