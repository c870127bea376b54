use super::*;

#[test]
fn comm_is_truncated_and_padded() {
    assert_eq!(&comm_bytes("ollama")[..7], b"ollama\0");
    let long = comm_bytes("ollama_llama_server");
    assert_eq!(&long[..15], b"ollama_llama_se");
    assert_eq!(long[15], 0);
}

#[test]
fn finds_group_dead_in_the_exit_format() {
    let format = "name: sched_process_exit\nID: 311\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
    assert_eq!(parse_field_offset(format, "group_dead", 1), Some(32));
    assert_eq!(parse_field_offset(format, "pid", 4), Some(24));
    assert_eq!(parse_field_offset(format, "pid", 1), None, "another size");
    assert_eq!(parse_field_offset(format, "comm[16]", 16), Some(8));
    assert_eq!(parse_field_offset(format, "nothing", 1), None);
}
