//! Property tests: no Dockerfile text makes the typed model, the stage graph
//! or expansion panic, and every error they report carries a span inside
//! the source.

use kiln_dockerfile::shell::Lexer;
use kiln_dockerfile::stages::{StageScope, Stages};
use proptest::prelude::*;

/// Mostly valid instructions with a random word spliced in (so that they
/// reach the stage graph and expansion), and some free-form hostile lines.
fn line() -> impl Strategy<Value = String> {
    let template = prop::sample::select(vec![
        "FROM busybox:$W AS s_W",
        "FROM s1",
        "FROM --platform=$TARGETPLATFORM ${V:-alpine}",
        "RUN --mount=type=cache,target=/c$W echo W",
        "RUN --mount=from=s1,target=/m$W true",
        "RUN --network=none [\"echo\", \"W\"]",
        "COPY --from=s1 /a$W /b/",
        "COPY --from=0 --chown=${U:-1} --chmod=$M a /W",
        "COPY <<EOF /W\nhello $V W\nEOF",
        "ADD --checksum=sha256:W --keep-git-dir https://x/W /d",
        "ENV K=W L=\"$V W\"",
        "LABEL k=\"W\"",
        "ARG W=1 B",
        "EXPOSE 80 $W",
        "VOLUME [\"/W\"]",
        "USER W",
        "WORKDIR /W/$V",
        "STOPSIGNAL W",
        "HEALTHCHECK --interval=5s CMD W",
        "HEALTHCHECK NONE",
        "ONBUILD COPY --from=s1 W /",
        "SHELL [\"/bin/sh\", \"-c\"]",
        "CMD W",
        "ENTRYPOINT [\"W\"]",
    ]);
    let word = "[-a-zA-Z0-9_${}:?+#%/\\\\`'\" .=]{0,10}";
    let valid = (template, word).prop_map(|(t, w)| t.replace('W', &w));
    let hostile = (
        prop::sample::select(vec![
            "FORM",
            "RUN",
            "COPY",
            "ARG",
            "ENV",
            "onbuild from",
            "HEALTHCHECK",
        ]),
        prop::sample::select(vec![
            "",
            "--from=$X ",
            "--chmod=8 ",
            "--retries=-1 ",
            "--link=maybe ",
            "--bogus ",
        ]),
        "[-a-zA-Z0-9_${}:?+#%/\\\\`'\"\\[\\], .=<>]{0,24}",
    )
        .prop_map(|(k, f, a)| format!("{k} {f}{a}"));
    prop_oneof![12 => valid, 1 => hostile]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn typed_model_graph_and_expansion_never_panic(lines in prop::collection::vec(line(), 1..8), prefix in prop::sample::select(vec!["FROM a AS s1\n", "ARG V=1 B\nFROM a AS s1\n", "# escape=`\nFROM a AS s1\n", ""])) {
        let source = format!("{prefix}{}\n", lines.join("\n"));
        let Ok(dockerfile) = kiln_dockerfile::parse(&source) else { return Ok(()) };
        let stages = match Stages::from_dockerfile(&dockerfile) {
            Ok(stages) => stages,
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for error in errors {
                    if let Some(span) = error.span {
                        prop_assert!(span.end.offset <= source.len(), "{error:?}");
                    }
                    let _ = error.render("Dockerfile", &source);
                }
                return Ok(());
            }
        };
        let build_args = vec![("V".to_string(), "2".to_string())];
        let Ok(graph) = stages.resolve(&build_args) else { return Ok(()) };
        if let Ok(target) = graph.target(None) {
            let needed = graph.required_stages(target);
            prop_assert!(needed.contains(&target));
        }
        let lexer: Lexer = stages.lexer();
        for stage in &stages.stages {
            let mut scope = StageScope::new(&graph.meta_env, &build_args, &[]);
            for command in &stage.commands {
                let _ = scope.dispatch(&lexer, command);
            }
        }
    }
}
