//! The tekflux-release-changed binary's arguments: help and version, never a server by accident.

#[test]
fn help_and_version_answer_and_other_arguments_are_refused() {
    tekflux_testkit::binary::assert_function_arguments(
        env!("CARGO_BIN_EXE_tekflux-release-changed"),
        "tekflux-release-changed",
    );
}
