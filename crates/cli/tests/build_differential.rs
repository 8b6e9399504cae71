//! Differential tests of `kiln build` against the real Docker engine with
//! BuildKit: every case (a Dockerfile plus context files) is built by
//! `DOCKER_BUILDKIT=1 docker build` from `busybox:local` and by kiln from a
//! kiln import of the same busybox rootfs (made exactly as
//! `shared/tools/docker-oracle.sh` makes it), both results are saved as
//! docker-archives, flattened layer by layer (whiteouts honoured), and
//! compared on paths, types, modes, owners, link targets, contents and the
//! config fields users see.
//!
//! Needs root (kiln's sandbox), a running Docker engine with `busybox:local`
//! (`shared/tools/docker-oracle.sh`), `/bin/busybox` (busybox-static) and
//! `tar`. Missing tools skip the tests locally and fail them under CI=true.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use diff_common::{
    config_fields, describe_differences, docker_build, docker_present, flatten_archive,
    import_busybox, kiln_build, output_text, set_mode, tools_present,
};
use image_common::kiln;
use serde_json::Value;

mod diff_common;
mod image_common;

/// A context file.
enum Item {
    File(&'static str, u32),
    Dir(u32),
    Link(&'static str),
    /// A tar archive of these (path, content) files; gzip-compressed when true.
    Tar(Vec<(&'static str, &'static str)>, bool),
}

struct Case {
    name: &'static str,
    dockerfile: &'static str,
    files: Vec<(&'static str, Item)>,
    args: Vec<&'static str>,
    target: Option<&'static str>,
    /// Empty directories created as RUN mount points: Docker 20.10's BuildKit
    /// leaves them in the image; BuildKit >= 0.11 (MountStubsCleaner) and
    /// kiln remove them. Allowed to be missing on kiln's side only.
    mount_stubs: Vec<&'static str>,
    /// More `docker build` / `kiln build` flags (`{ctx}`: the context dir).
    flags: Vec<&'static str>,
    /// Text that must appear in neither image (files, config, history): the
    /// values of secrets the build used.
    absent: Vec<&'static str>,
    /// An image both engines build first under this tag, from this
    /// Dockerfile (with the case's context), for the case to start from.
    base: Option<(&'static str, &'static str)>,
}

fn case(name: &'static str, dockerfile: &'static str, files: Vec<(&'static str, Item)>) -> Case {
    Case {
        name,
        dockerfile,
        files,
        args: Vec::new(),
        target: None,
        mount_stubs: Vec::new(),
        flags: Vec::new(),
        absent: Vec::new(),
        base: None,
    }
}

fn write_context(dir: &Path, case: &Case) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), case.dockerfile).unwrap();
    for (path, item) in &case.files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        match item {
            Item::File(content, mode) => {
                fs::write(&full, content).unwrap();
                set_mode(&full, *mode);
            }
            Item::Dir(mode) => {
                fs::create_dir_all(&full).unwrap();
                set_mode(&full, *mode);
            }
            Item::Link(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
            Item::Tar(members, gzip) => {
                let source = dir.with_extension(format!("tar-src-{}", path.replace('/', "_")));
                for (member, content) in members {
                    let member_path = source.join(member);
                    fs::create_dir_all(member_path.parent().unwrap()).unwrap();
                    fs::write(&member_path, content).unwrap();
                }
                let status = Command::new("tar")
                    .arg(if *gzip { "-czf" } else { "-cf" })
                    .arg(&full)
                    .arg("--owner=3")
                    .arg("--group=4")
                    .arg("-C")
                    .arg(&source)
                    .arg(".")
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        }
    }
}

fn cases() -> Vec<Case> {
    use Item::*;
    let mut cases = vec![
        case(
            "config-only",
            "FROM busybox:local\nENV A=1 B=\"two words\"\nENV C=$A-x\nWORKDIR /app\nWORKDIR sub\nUSER nobody\n",
            vec![],
        ),
        case(
            "run-shell-form",
            "FROM busybox:local\nRUN echo hello > /hello.txt && mkdir -p /a/b && chmod 700 /a && ln -s /hello.txt /a/link\n",
            vec![],
        ),
        case(
            "run-exec-form-and-env",
            "FROM busybox:local\nENV GREETING=hi\nRUN [\"/bin/sh\", \"-c\", \"echo $GREETING > /exec.txt\"]\n",
            vec![],
        ),
        case(
            "run-deletes-make-whiteouts",
            "FROM busybox:local\nRUN rm /bin/vi /etc/group && rm -r /root\nRUN mkdir /root && echo new > /root/x\n",
            vec![],
        ),
        case(
            "copy-files-and-dirs",
            "FROM busybox:local\nCOPY f /dst/\nCOPY d /dd\nCOPY f /renamed\nCOPY d/e/z /tmp\n",
            vec![
                ("f", File("hello\n", 0o644)),
                ("d", Dir(0o700)),
                ("d/e/z", File("zed\n", 0o755)),
                ("d/g", File("gee\n", 0o600)),
            ],
        ),
        case(
            "copy-wildcards",
            "FROM busybox:local\nCOPY *.txt /texts/\nCOPY sub/*.c /csrc/\n",
            vec![
                ("a.txt", File("a\n", 0o644)),
                ("b.txt", File("b\n", 0o640)),
                ("c.md", File("c\n", 0o644)),
                ("sub/x.c", File("int x;\n", 0o644)),
                ("sub/y.h", File("int y;\n", 0o644)),
            ],
        ),
        case(
            "copy-relative-to-workdir",
            "FROM busybox:local\nWORKDIR /app\nCOPY f .\nCOPY f sub/\nCOPY f renamed\n",
            vec![("f", File("content\n", 0o644))],
        ),
        case(
            "copy-chown-chmod",
            "FROM busybox:local\nCOPY --chown=1:2 f /o/\nCOPY --chown=nobody f /n/\nCOPY --chown=nobody:nogroup d /nd/\nCOPY --chmod=600 f /m\nCOPY --chmod=750 d /md\n",
            vec![
                ("f", File("x\n", 0o644)),
                ("d/a", File("a\n", 0o644)),
                ("d/s/b", File("b\n", 0o755)),
            ],
        ),
        case(
            "dockerignore",
            "FROM busybox:local\nCOPY . /ctx/\n",
            vec![
                (".dockerignore", File("*.log\nbuild\n!build/keep\n", 0o644)),
                ("a.txt", File("a\n", 0o644)),
                ("debug.log", File("log\n", 0o644)),
                ("build/out", File("o\n", 0o644)),
                ("build/keep", File("k\n", 0o644)),
            ],
        ),
        case(
            "config-instructions",
            "FROM busybox:local\nLABEL a=1 \"b c\"=d\nEXPOSE 80 53/udp 8000-8001\nSTOPSIGNAL SIGTERM\nVOLUME /data [\"/v2\"]\nVOLUME [\"/v3\"]\nHEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q localhost || exit 1\nCMD [\"sh\", \"-c\", \"echo hi\"]\n",
            vec![],
        ),
        case(
            "entrypoint-resets-inherited-cmd",
            "FROM busybox:local AS base\nCMD [\"base-cmd\"]\nFROM base\nENTRYPOINT [\"/bin/echo\"]\n",
            vec![],
        ),
        case(
            "entrypoint-keeps-own-cmd",
            "FROM busybox:local\nCMD echo shell form\nENTRYPOINT /bin/echo x\n",
            vec![],
        ),
        case(
            "shell-instruction",
            "FROM busybox:local\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo \"$0\" > /shell.txt\nCMD echo hi\n",
            vec![],
        ),
        case(
            "multi-stage-builder",
            "FROM busybox:local AS builder\nWORKDIR /src\nCOPY main.c .\nRUN mkdir -p /out && (echo '#!/bin/sh'; echo 'echo built'; cat main.c) > /out/app && chmod 755 /out/app && dd if=/dev/zero of=/out/big bs=1k count=64 2>/dev/null\n\nFROM busybox:local\nCOPY --from=builder /out/app /usr/local/bin/app\nCMD [\"app\"]\n",
            vec![("main.c", File("int main(){return 0;}\n", 0o644))],
        ),
        case(
            "unused-failing-stage-is-not-built",
            "FROM busybox:local AS broken\nRUN exit 1\nFROM busybox:local AS good\nRUN echo ok > /ok\n",
            vec![],
        ),
        case(
            "scratch-and-copy-from-index",
            "FROM busybox:local\nRUN mkdir -p /x && echo one > /x/one\nFROM scratch\nCOPY --from=0 /x /x\nCOPY f /\n",
            vec![("f", File("scratch file\n", 0o644))],
        ),
        case(
            "symlinks-in-context",
            "FROM busybox:local\nCOPY link /l/\nCOPY d /d/\n",
            vec![
                ("f", File("target\n", 0o644)),
                ("link", Link("f")),
                ("d/inner", Link("../f")),
            ],
        ),
        case(
            "user-run-creates-owned-files",
            "FROM busybox:local\nRUN mkdir /data && chown nobody /data\nUSER nobody\nRUN echo me > /data/mine && mkdir /data/sub\nUSER 0\n",
            vec![],
        ),
        case(
            "workdir-after-user",
            "FROM busybox:local\nUSER nobody\nWORKDIR /made/by/nobody\n",
            vec![],
        ),
        case(
            "copy-from-stage-owners",
            "FROM busybox:local AS builder\nRUN mkdir /o && echo x > /o/f && chown 5:6 /o/f && chmod 640 /o/f && ln -s f /o/l\nFROM busybox:local\nCOPY --from=builder /o /kept\nCOPY --from=builder --chown=7:8 /o/f /changed\nCOPY --from=builder /o/l /followed\n",
            vec![],
        ),
        case(
            "add-local-files",
            "FROM busybox:local\nADD f /added/\nADD d /addeddir\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o600))],
        ),
        case(
            "env-in-copy-paths",
            "FROM busybox:local\nENV DIR=/target SRC=f\nCOPY $SRC ${DIR}/\nCOPY ${SRC} /plain-${SRC}\n",
            vec![("f", File("f\n", 0o644))],
        ),
        case(
            "copy-into-existing-dirs",
            "FROM busybox:local\nCOPY f /tmp/\nCOPY f /etc/\nCOPY d /tmp\n",
            vec![("f", File("f\n", 0o644)), ("d/y", File("y\n", 0o644))],
        ),
        case(
            "arg-in-run-environment",
            "FROM busybox:local\nARG X=1\nARG Y\nRUN echo \"$X-$Y\" > /x && env | grep -c '^X=' > /count\n",
            vec![],
        ),
        case(
            "dot-destination",
            "FROM busybox:local\nWORKDIR /w\nCOPY d ./\nCOPY f ./g\n",
            vec![("f", File("f\n", 0o644)), ("d/y", File("y\n", 0o755))],
        ),
        case(
            "copy-several-sources-into-dir",
            "FROM busybox:local\nCOPY a b d /many/\nCOPY [\"a\", \"b\", \"/json form/\"]\n",
            vec![
                ("a", File("a\n", 0o644)),
                ("b", File("b\n", 0o600)),
                ("d/c", File("c\n", 0o644)),
            ],
        ),
        case(
            "copy-from-image",
            "FROM scratch\nCOPY --from=busybox:local /bin/busybox /bin/busybox\nCOPY --from=busybox:local /etc /etc\n",
            vec![],
        ),
        case(
            "user-with-group-and-numeric-signal",
            "FROM busybox:local\nUSER nobody:nogroup\nSTOPSIGNAL 9\nLABEL multi=\"line \\\n  continued\"\nEXPOSE 8080/tcp\n",
            vec![],
        ),
        case(
            "healthcheck-none-and-exec",
            "FROM busybox:local AS a\nHEALTHCHECK CMD [\"true\"]\nFROM a\nHEALTHCHECK NONE\n",
            vec![],
        ),
        case(
            "run-as-user-in-workdir",
            "FROM busybox:local\nRUN mkdir -p /home/app && chown 1000:1000 /home/app\nUSER 1000:1000\nWORKDIR /home/app\nRUN echo mine > owned && mkdir d && touch d/x\n",
            vec![],
        ),
        case(
            "add-unpacks-local-archives",
            "FROM busybox:local\nADD plain.tar /plain/\nADD packed.tar.gz /packed\nCOPY plain.tar /copied/\n",
            vec![
                (
                    "plain.tar",
                    Tar(vec![("a.txt", "a\n"), ("sub/b.txt", "b\n")], false),
                ),
                ("packed.tar.gz", Tar(vec![("c.txt", "c\n")], true)),
            ],
        ),
        case(
            "onbuild-triggers-run-in-the-child",
            "FROM busybox:local AS base\nONBUILD RUN echo triggered > /triggered\nONBUILD ENV FROM_TRIGGER=1\nONBUILD COPY f /from-trigger\nRUN echo base > /base\nFROM base\nRUN cat /triggered > /seen\n",
            vec![("f", File("f\n", 0o644))],
        ),
        case(
            "onbuild-kept-when-not-used-as-base",
            "FROM busybox:local\nONBUILD RUN echo later\n",
            vec![],
        ),
        case(
            "destinations-through-symlinks",
            "FROM busybox:local\nRUN mkdir -p /usr/real/bin && ln -s usr/real /merged && ln -s /usr/real/bin /abs-link\nCOPY f /merged/\nCOPY f /merged/bin/g\nCOPY f /abs-link/h\nWORKDIR /merged/work\n",
            vec![("f", File("f\n", 0o644))],
        ),
        case(
            "copy-from-through-absolute-symlinks",
            "FROM busybox:local AS builder\nRUN mkdir -p /data/sub && echo image > /data/x && echo deep > /data/sub/y && ln -s /data /abs && ln -s /etc /etc-link\nFROM busybox:local\nCOPY --from=builder /abs/x /got\nCOPY --from=builder /abs/sub /gotdir\nCOPY --from=builder /etc-link/passwd /passwd-from-stage\n",
            vec![],
        ),
        case(
            "seed-like-appuser",
            "FROM busybox:local AS builder\nWORKDIR /src\nCOPY main.c .\nRUN mkdir -p /out && cp main.c /out/server && chmod 755 /out/server\nFROM busybox:local\nRUN echo appgroup:x:1001: >> /etc/group && echo appuser:x:1002:1001::/home/appuser:/bin/sh >> /etc/passwd\nWORKDIR /home/appuser\nCOPY --from=builder --chown=appuser:appgroup /out/server ./server\nCOPY --chown=appuser main.c ./src/\nUSER appuser\nEXPOSE 8080\nCMD [\"./server\"]\n",
            vec![("main.c", File("int main(){return 0;}\n", 0o644))],
        ),
    ];
    cases.push(Case {
        name: "args-meta-and-stage",
        dockerfile: "ARG BASE=busybox:local\nARG V=meta\nFROM $BASE\nARG V\nARG W=default\nENV E=$V-$W\nRUN echo \"$V $W $E\" > /args.txt\n",
        files: vec![],
        args: vec!["W=given"],
        target: None,
        mount_stubs: vec![],
        flags: vec![],
        absent: vec![],
        base: None,
    });
    cases.push(Case {
        name: "run-mounts-never-reach-the-image",
        dockerfile: "FROM busybox:local AS src\nRUN mkdir /data && echo fromstage > /data/s\nFROM busybox:local\nRUN --mount=type=cache,target=/var/cache/kiln-diff,sharing=locked echo x > /var/cache/kiln-diff/f && echo ok > /ok\nRUN --mount=type=bind,from=src,source=/data,target=/mnt cp /mnt/s /copied-s\nRUN --mount=type=bind,source=c.txt,target=/c.txt cp /c.txt /copied-c\nRUN --mount=type=tmpfs,target=/scratch echo x > /scratch/x && ls /scratch > /tmpls\n",
        files: vec![("c.txt", File("ctxfile\n", 0o644))],
        args: vec![],
        target: None,
        mount_stubs: vec!["mnt", "scratch", "var", "var/cache", "var/cache/kiln-diff"],
        flags: vec![],
        absent: vec![],
        base: None,
    });
    cases.push(Case {
        name: "target-stops-early",
        dockerfile: "FROM busybox:local AS first\nRUN echo first > /first\nCMD [\"first\"]\nFROM first AS second\nRUN echo second > /second\nFROM busybox:local\nRUN exit 7\n",
        files: vec![],
        args: vec![],
        target: Some("second"),
        mount_stubs: vec![],
        flags: vec![],
        absent: vec![],
        base: None,
    });
    cases.extend(scoping_cases());
    cases.extend(mount_cases());
    cases
}

/// ARG/ENV scoping as BuildKit does it: ARG and ENV set the same variables
/// (the later one wins in RUN and expansion, only ENV reaches the image),
/// child stages inherit their parent's ARGs, build args nothing declares are
/// invisible, automatic platform ARGs exist only once declared.
fn scoping_cases() -> Vec<Case> {
    vec![
        case(
            "arg-after-env-wins-in-run",
            "FROM busybox:local\nENV A=env\nARG A=arg\nRUN echo \"run=$A\" > /a && env | sort > /env\nENV B=$A\n",
            vec![],
        ),
        case(
            "arg-after-env-with-build-arg",
            "FROM busybox:local\nENV A=env\nARG A=arg\nRUN echo \"run=$A\" > /a && env | sort > /env\nENV B=$A\n",
            vec![],
        )
        .args(&["A=given"]),
        case(
            "env-after-arg-wins",
            "FROM busybox:local\nARG A=arg\nENV A=env\nRUN echo \"run=$A\" > /a && env | sort > /env\nARG A\nRUN echo \"again=$A\" > /b\n",
            vec![],
        )
        .args(&["A=given"]),
        case(
            "child-stage-inherits-args",
            "FROM busybox:local AS parent\nARG P=parent\nENV E=env\nARG E=arg-over-env\nRUN echo \"parent E=$E\" > /pe\nFROM parent AS child\nRUN echo \"P=$P E=$E\" > /p && env | sort > /env\nENV FROM_P=$P\nFROM child\nRUN echo \"[$P]\" > /grandchild\n",
            vec![],
        ),
        case(
            "child-stage-build-arg-and-redeclare",
            "FROM busybox:local AS parent\nARG P=parent\nFROM parent\nARG P\nARG Q=q-default\nRUN echo \"$P $Q\" > /pq && env | sort > /env\n",
            vec![],
        )
        .args(&["P=given", "UNDECLARED=x"]),
        case(
            "arg-defaults-see-env-and-args",
            "FROM busybox:local\nENV V=1\nARG W=$V-x\nARG X=${W}-y Y=${NOPE:-fallback}\nRUN echo \"$W $X $Y\" > /w\nENV SAVED=\"$W|$X|$Y\"\n",
            vec![],
        )
        .args(&["X=${W}-literal"]),
        case(
            "undeclared-build-args-are-invisible",
            "FROM busybox:local\nRUN echo \"[$NOTDECL]\" > /x && env | sort > /env\nENV SEEN=\"[$NOTDECL]\"\n",
            vec![],
        )
        .args(&["NOTDECL=x"]),
        case(
            "platform-args-in-stage",
            "FROM busybox:local\nRUN echo \"[$TARGETARCH][$BUILDPLATFORM]\" > /undeclared\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\nARG BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\nRUN echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDOS $BUILDARCH [$BUILDVARIANT]\" > /plat && env | sort > /env\nENV PLAT=$TARGETPLATFORM\n",
            vec![],
        ),
        case(
            "platform-args-in-global-scope",
            "ARG BASE=busybox:local\nARG SUFFIX=$BUILDOS-$TARGETARCH\nFROM --platform=$BUILDPLATFORM $BASE\nARG SUFFIX\nARG TARGETARCH=ignored-default\nRUN echo \"$SUFFIX $TARGETARCH\" > /s\n",
            vec![],
        ),
        case(
            "args-in-copy-workdir-label-user",
            "ARG META=meta-value\nFROM busybox:local\nARG DIR=/opt/app SRC=f OWNER=nobody\nWORKDIR $DIR\nCOPY --chown=$OWNER $SRC ${DIR}/copied-$SRC\nLABEL dir=$DIR meta=\"[$META]\"\nUSER $OWNER\nENV HOME_DIR=$DIR\n",
            vec![("f", Item::File("f\n", 0o644)), ("g", Item::File("g\n", 0o644))],
        )
        .args(&["SRC=g"]),
        case(
            "env-accumulates-through-stages",
            "FROM busybox:local AS one\nENV A=1 PATH=/opt/bin:$PATH\nFROM one AS two\nENV B=$A-2\nARG C=c\nFROM two\nENV C=${C:-unset} D=\"$A $B\"\nRUN echo \"$A $B $C $D $PATH\" > /envs\n",
            vec![],
        ),
        case(
            "arg-without-value-and-empty-build-arg",
            "FROM busybox:local\nARG EMPTY\nARG UNSET\nARG DEFAULTED=d\nRUN echo \"[${EMPTY-was-unset}] [${UNSET-was-unset}] [${DEFAULTED}]\" > /args && env | sort > /env\n",
            vec![],
        )
        .args(&["EMPTY=", "DEFAULTED="]),
        case(
            "onbuild-triggers-of-an-image",
            "FROM kiln-diff-onbuild-base:1\nRUN cat /app/f > /seen && echo \"$OB_ENV\" > /env-seen\n",
            vec![("f", Item::File("child context file\n", 0o644))],
        )
        .base(
            "kiln-diff-onbuild-base:1",
            "FROM busybox:local\nWORKDIR /app\nONBUILD COPY f /app/f\nONBUILD ENV OB_ENV=from-trigger\nONBUILD RUN echo triggered > /app/triggered\nONBUILD LABEL onbuild=yes\nCMD [\"sh\"]\n",
        ),
        case(
            "onbuild-arg-and-env-triggers",
            "FROM busybox:local AS base\nONBUILD ARG OB=onbuild-default\nONBUILD ENV OE=$OB\nONBUILD RUN echo \"$OB $OE\" > /ob\nFROM base AS user\nRUN echo \"after $OB\" > /after\n",
            vec![],
        )
        .args(&["OB=given"]),
    ]
}

impl Case {
    fn args(mut self, args: &[&'static str]) -> Case {
        self.args.extend_from_slice(args);
        self
    }

    fn flags(mut self, flags: &[&'static str]) -> Case {
        self.flags.extend_from_slice(flags);
        self
    }

    fn stubs(mut self, stubs: &[&'static str]) -> Case {
        self.mount_stubs.extend_from_slice(stubs);
        self
    }

    fn absent(mut self, texts: &[&'static str]) -> Case {
        self.absent.extend_from_slice(texts);
        self
    }

    fn base(mut self, tag: &'static str, dockerfile: &'static str) -> Case {
        self.base = Some((tag, dockerfile));
        self
    }
}

/// RUN mounts: secrets (never in the image, its config or history), cache
/// mounts with their options, bind mounts from stages, images and the
/// context, tmpfs.
fn mount_cases() -> Vec<Case> {
    use Item::*;
    vec![
        case(
            "secret-file-default-target",
            "FROM busybox:local\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len && stat -c '%a %u %g' /run/secrets/tok > /stat && ls /run/secrets > /ls\nRUN test ! -e /run/secrets/tok && echo gone > /after\n",
            vec![("tok.txt", File("kiln-secret-value-1\n", 0o600))],
        )
        .flags(&["--secret", "id=tok,src={ctx}/tok.txt"])
        .stubs(&["run", "run/secrets"])
        .absent(&["kiln-secret-value-1"]),
        case(
            "secret-target-mode-owner",
            "FROM busybox:local\nUSER nobody\nRUN --mount=type=secret,id=tok,target=/etc/app/token,mode=0440,uid=65534,gid=65534 stat -c '%a %u %g' /etc/app/token > /tmp/stat && head -c 4 /etc/app/token > /tmp/head\nUSER root\nRUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo absent > /absent\n",
            vec![("tok.txt", File("kiln-secret-value-2", 0o644))],
        )
        .flags(&["--secret", "id=tok,src={ctx}/tok.txt"])
        .stubs(&["etc/app", "run", "run/secrets"])
        .absent(&["kiln-secret-value-2"]),
        case(
            "cache-mount-from-stage-and-shared-id",
            "FROM busybox:local AS seed\nRUN mkdir -p /seed/sub && echo seeded > /seed/sub/s && chown -R 5:6 /seed\nFROM busybox:local\nRUN --mount=type=cache,target=/c,from=seed,source=/seed cat /c/sub/s > /fromcache && stat -c '%u %g' /c/sub/s > /owner\nRUN --mount=type=cache,id=kiln-diff-shared-id,target=/a echo shared > /a/f\nRUN --mount=type=cache,id=kiln-diff-shared-id,target=/other/b cat /other/b/f > /got\n",
            vec![],
        )
        .stubs(&["c", "a", "other", "other/b"]),
        case(
            "cache-mount-sharing-mode-owner",
            "FROM busybox:local\nRUN --mount=type=cache,id=kiln-diff-private,target=/pc,sharing=private,mode=0700,uid=65534,gid=65534 stat -c '%a %u %g' /pc > /pcstat\nRUN --mount=type=cache,id=kiln-diff-locked,target=/lc,sharing=locked stat -c '%a %u %g' /lc > /lcstat\nRUN --mount=type=cache,id=kiln-diff-shared,target=/sc,sharing=shared,ro stat -c '%a %u %g' /sc > /scstat && (touch /sc/x 2>/dev/null && echo writable || echo read-only) > /scro\n",
            vec![],
        )
        .stubs(&["pc", "lc", "sc"]),
        case(
            "bind-rw-writes-are-discarded",
            "FROM busybox:local AS src\nRUN mkdir /data && echo orig > /data/f\nFROM busybox:local\nRUN --mount=type=bind,from=src,source=/data,target=/m,rw echo changed > /m/f && echo new > /m/n && ls /m > /ls-rw\nRUN --mount=type=bind,from=src,source=/data,target=/m cat /m/f > /after && ls /m > /ls-after\nRUN --mount=type=bind,source=.,target=/ctx,rw rm /ctx/c.txt && ls /ctx > /ctx-ls\nRUN --mount=type=bind,target=/ctx ls /ctx > /ctx-after\n",
            vec![("c.txt", File("ctx\n", 0o644))],
        )
        .stubs(&["m", "ctx"]),
        case(
            "bind-from-image-and-file-source",
            "FROM scratch AS files\nCOPY c.txt /deep/c.txt\nFROM busybox:local\nRUN --mount=type=bind,from=busybox:local,source=/etc,target=/img-etc cat /img-etc/group > /group-copy\nRUN --mount=type=bind,from=files,source=/deep/c.txt,target=/one-file cat /one-file > /from-file\nRUN --mount=type=tmpfs,target=/scratch-space echo t > /scratch-space/t && ls -a /scratch-space > /tmpfs-ls\n",
            vec![("c.txt", File("ctx file\n", 0o644))],
        )
        .stubs(&["img-etc", "one-file", "scratch-space"]),
        case(
            "bind-context-honours-dockerignore",
            "FROM busybox:local\nRUN --mount=type=bind,target=/ctx find /ctx | sort > /ctx-find && stat -c '%n %a %u %g' /ctx /ctx/build /ctx/sub > /ctx-stat\nRUN --mount=type=bind,target=/ctx,rw ls -a /ctx/build > /rw-ls && rm -f /ctx/a.txt\nRUN --mount=type=bind,source=build,target=/b ls -a /b > /b-ls\n",
            vec![
                (".dockerignore", File("*.log\nbuild\n!build/keep\nsecret/\n", 0o644)),
                ("a.txt", File("a\n", 0o644)),
                ("x.log", File("ignored\n", 0o644)),
                ("build", Dir(0o750)),
                ("build/out.bin", File("ignored\n", 0o644)),
                ("build/keep", File("kept\n", 0o600)),
                ("secret/k", File("ignored\n", 0o644)),
                ("sub/y.log", File("kept: *.log is only the top level\n", 0o644)),
            ],
        )
        .stubs(&["ctx", "b"]),
    ]
}

/// The case's flags, build args and target as command-line arguments.
fn case_args(case: &Case, context: &Path) -> Vec<String> {
    let mut args: Vec<String> = case
        .flags
        .iter()
        .map(|flag| flag.replace("{ctx}", &context.display().to_string()))
        .collect();
    for arg in &case.args {
        args.extend(["--build-arg".to_string(), arg.to_string()]);
    }
    if let Some(target) = case.target {
        args.extend(["--target".to_string(), target.to_string()]);
    }
    args
}

#[test]
fn kiln_build_matches_buildkit() {
    if !tools_present() || !docker_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let only = std::env::var("KILN_DIFF_CASE").ok();
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in cases() {
        // KILN_DIFF_CASE: comma-separated case names or name prefixes.
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| case.name.starts_with(n)))
        {
            continue;
        }
        let context = work.path().join("contexts").join(case.name);
        write_context(&context, &case);
        let tag = format!("kiln-diff-{}", case.name);
        if let Some((base_tag, dockerfile)) = case.base {
            let base_dir = work
                .path()
                .join("contexts")
                .join(format!("{}-base", case.name));
            let base_case = Case {
                name: case.name,
                dockerfile,
                files: Vec::new(),
                args: Vec::new(),
                target: None,
                mount_stubs: Vec::new(),
                flags: Vec::new(),
                absent: Vec::new(),
                base: None,
            };
            write_context(&base_dir, &base_case);
            if let Err(e) = docker_build(&base_dir, base_tag, &case_args(&base_case, &base_dir)) {
                failures.push(format!(
                    "[{}] docker build of the base failed: {e}",
                    case.name
                ));
                continue;
            }
            if let Err(e) = kiln_build(
                &root,
                &base_dir,
                base_tag,
                &case_args(&base_case, &base_dir),
            ) {
                failures.push(format!(
                    "[{}] kiln build of the base failed: {e}",
                    case.name
                ));
                continue;
            }
        }
        let result = docker_build(&context, &tag, &case_args(&case, &context));
        if let Some((base_tag, _)) = case.base {
            let _ = Command::new("/usr/bin/docker")
                .args(["rmi", "-f", base_tag])
                .output();
        }
        if let Err(e) = result {
            failures.push(format!("[{}] docker build failed: {e}", case.name));
            continue;
        }
        if let Err(e) = kiln_build(&root, &context, &tag, &case_args(&case, &context)) {
            failures.push(format!("[{}] kiln build failed: {e}", case.name));
            continue;
        }
        let docker_tar = work.path().join(format!("{}-docker.tar", case.name));
        let out = Command::new("/usr/bin/docker")
            .args(["save", "-o"])
            .arg(&docker_tar)
            .arg(&tag)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker save: {}", output_text(&out));
        let _ = Command::new("/usr/bin/docker")
            .args(["rmi", "-f", &tag])
            .output();
        let kiln_tar = work.path().join(format!("{}-kiln.tar", case.name));
        let out = kiln(&root)
            .arg("save")
            .arg(&tag)
            .arg("-o")
            .arg(&kiln_tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "kiln save: {}", output_text(&out));
        let (docker_tree, docker_config) = flatten_archive(&docker_tar, work.path());
        let (kiln_tree, kiln_config) = flatten_archive(&kiln_tar, work.path());
        let mut docker_tree = docker_tree;
        for stub in &case.mount_stubs {
            if !kiln_tree.contains_key(*stub)
                && docker_tree.get(*stub).is_some_and(|n| n.kind == 'd')
            {
                docker_tree.remove(*stub);
            }
        }
        let diffs = describe_differences(&docker_tree, &kiln_tree);
        if !diffs.is_empty() {
            failures.push(format!(
                "[{}] file trees differ:\n  {}",
                case.name,
                diffs.join("\n  ")
            ));
        }
        for text in &case.absent {
            for (who, tree, config) in [
                ("docker", &docker_tree, &docker_config),
                ("kiln", &kiln_tree, &kiln_config),
            ] {
                let needle = text.as_bytes();
                for (path, node) in tree.iter() {
                    if node.content.windows(needle.len()).any(|w| w == needle) {
                        failures.push(format!("[{}] {who}: {text:?} found in {path}", case.name));
                    }
                }
                if config.to_string().contains(text) {
                    failures.push(format!(
                        "[{}] {who}: {text:?} found in the config",
                        case.name
                    ));
                }
            }
        }
        // History entries as docker shows them: what made each layer, and
        // which entries made none.
        let history = |config: &Value| -> Vec<(bool, String)> {
            config["history"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|h| {
                            (
                                h["empty_layer"].as_bool().unwrap_or(false),
                                h["created_by"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (docker_history, kiln_history) = (history(&docker_config), history(&kiln_config));
        if docker_history != kiln_history {
            failures.push(format!(
                "[{}] history differs:\n  docker {docker_history:?}\n  kiln   {kiln_history:?}",
                case.name
            ));
        }
        let docker_fields = config_fields(&docker_config);
        let kiln_fields = config_fields(&kiln_config);
        for (key, value) in &docker_fields {
            if kiln_fields.get(key) != Some(value) {
                failures.push(format!(
                    "[{}] config {key}: docker {value} kiln {}",
                    case.name,
                    kiln_fields.get(key).cloned().unwrap_or(Value::Null)
                ));
            }
        }
        compared += 1;
    }
    eprintln!("{compared} cases compared");
    assert!(
        compared > 0 || !failures.is_empty(),
        "no case matched KILN_DIFF_CASE={only:?}"
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn build_kiln_only(root: &Path, dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> Output {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        fs::write(dir.join(path), content).unwrap();
    }
    kiln(root)
        .args(["build", "--progress=plain", "-t", "kiln-only"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn noop_rebuild_is_all_cached_and_gives_the_same_image() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let dockerfile = "FROM busybox:local AS b\nCOPY a /a\nRUN cp /a /b\nWORKDIR /w\nFROM busybox:local\nCOPY --from=b /b /c\nRUN echo done\n";
    let context = work.path().join("ctx");
    let first = build_kiln_only(&root, &context, dockerfile, &[("a", "one\n")]);
    assert!(first.status.success(), "{}", output_text(&first));
    let first_stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(
        !first_stderr.contains("CACHED"),
        "cold build hit the cache:\n{first_stderr}"
    );
    let started = std::time::Instant::now();
    let second = build_kiln_only(&root, &context, dockerfile, &[("a", "one\n")]);
    let elapsed = started.elapsed();
    assert!(second.status.success(), "{}", output_text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(
        stderr.matches("CACHED").count(),
        5,
        "every step cached:\n{stderr}"
    );
    assert_eq!(
        first.stdout, second.stdout,
        "same image ID after a no-op rebuild"
    );
    eprintln!("no-op rebuild took {elapsed:?}");
    // One changed context file invalidates the steps that read it and what follows.
    let third = build_kiln_only(&root, &context, dockerfile, &[("a", "two\n")]);
    assert!(third.status.success(), "{}", output_text(&third));
    let stderr = String::from_utf8_lossy(&third.stderr).into_owned();
    assert_eq!(
        stderr.matches("CACHED").count(),
        0,
        "changed file reran its dependants:\n{stderr}"
    );
    assert_ne!(first.stdout, third.stdout);
    // --no-cache-filter re-runs that stage; its new results invalidate what uses them.
    let filtered = kiln(&root)
        .args(["build", "--no-cache-filter", "b", "--progress=plain"])
        .arg(&context)
        .output()
        .unwrap();
    assert!(filtered.status.success(), "{}", output_text(&filtered));
    let stderr = String::from_utf8_lossy(&filtered.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    let mut b_steps = 0;
    for pair in lines.windows(2) {
        if pair[0].contains("[b ") && !pair[0].contains("FROM") {
            b_steps += 1;
            assert!(
                !pair[1].ends_with("CACHED"),
                "stage b must re-run:\n{stderr}"
            );
        }
    }
    assert_eq!(b_steps, 3, "{stderr}");
    // Steps using b's results may still hit the cache: keys chain through
    // diff ids, so they do exactly when b re-created identical content.
    // --no-cache runs everything again.
    let fourth = kiln(&root)
        .args(["build", "--no-cache", "--progress=plain"])
        .arg(&context)
        .output()
        .unwrap();
    assert!(fourth.status.success(), "{}", output_text(&fourth));
    assert!(!String::from_utf8_lossy(&fourth.stderr).contains("CACHED"));
}

#[test]
fn failing_run_names_stage_step_line_and_exit_code() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let out = build_kiln_only(
        &root,
        &work.path().join("ctx"),
        "FROM busybox:local AS app\nRUN echo before\nRUN echo to-stderr >&2; exit 3\nRUN echo never\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[3/4] RUN echo to-stderr >&2; exit 3"),
        "{stderr}"
    );
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    assert!(
        stderr.contains("to-stderr"),
        "command output shown: {stderr}"
    );
    assert!(stderr.contains("stage app"), "{stderr}");
    assert!(stderr.contains(":3:"), "Dockerfile line shown: {stderr}");
    assert!(!stderr.contains("never"), "{stderr}");
}

#[test]
fn missing_base_image_is_a_clear_error() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let out = build_kiln_only(
        &root,
        &work.path().join("ctx"),
        "FROM nosuchimage:1\nRUN true\n",
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nosuchimage:1") && stderr.contains("kiln import"),
        "{stderr}"
    );
}

#[test]
fn cache_mount_persists_across_builds_and_stays_out_of_the_image() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let dockerfile = "FROM busybox:local\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /runs\n";
    let context = work.path().join("ctx");
    for expected in ["1", "2"] {
        let out = kiln(&root)
            .args(["build", "--no-cache", "-q", "-t", "cached-mount"])
            .arg({
                fs::create_dir_all(&context).unwrap();
                fs::write(context.join("Dockerfile"), dockerfile).unwrap();
                &context
            })
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let saved = work.path().join(format!("saved-{expected}.tar"));
        let out = kiln(&root)
            .args(["save", "cached-mount", "-o"])
            .arg(&saved)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let (tree, _) = flatten_archive(&saved, work.path());
        let runs = tree
            .get("runs")
            .map(|n| String::from_utf8_lossy(&n.content).trim().to_string());
        assert_eq!(
            runs.as_deref(),
            Some(expected),
            "the cache mount kept the earlier run's file"
        );
        assert!(
            !tree.contains_key("cache"),
            "mount point or contents leaked into the image"
        );
    }
}

#[test]
fn output_local_label_and_iidfile() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nRUN echo out > /out.txt && rm /bin/vi\n",
    )
    .unwrap();
    let dest = work.path().join("rootfs");
    let iidfile = work.path().join("iid");
    let out = kiln(&root)
        .args(["build", "-q", "-t", "outputs", "--label", "team=kiln"])
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg("--iidfile")
        .arg(&iidfile)
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(fs::read_to_string(dest.join("out.txt")).unwrap(), "out\n");
    assert!(dest.join("bin/busybox").is_file());
    assert!(
        fs::symlink_metadata(dest.join("bin/vi")).is_err(),
        "deleted file stays deleted"
    );
    let id = fs::read_to_string(&iidfile).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    let inspect = kiln(&root).args(["inspect", "outputs"]).output().unwrap();
    assert!(inspect.status.success(), "{}", output_text(&inspect));
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("\"team\"") && text.contains("\"kiln\""),
        "{text}"
    );
}

/// Heredocs need a newer Dockerfile frontend than Docker 20.10's built-in
/// one, so they are checked against the reference's documented results.
#[test]
fn run_and_copy_heredocs() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nENV WHO=world\nRUN <<EOF\necho a > /a\necho \"$WHO\" > /b\nEOF\nRUN cat <<EOF > /c && cat <<-EOT > /d\nhello $WHO\nEOF\n\ttabbed\n\tEOT\nCOPY <<EOF /etc/greeting\nhi ${WHO}\nEOF\nCOPY <<'EOF' /literal\nkeep $WHO\nEOF\n",
    )
    .unwrap();
    let dest = work.path().join("rootfs");
    let out = kiln(&root)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let read = |name: &str| fs::read_to_string(dest.join(name)).unwrap_or_default();
    assert_eq!(read("a"), "a\n");
    assert_eq!(read("b"), "world\n");
    assert_eq!(read("c"), "hello world\n");
    assert_eq!(read("d"), "tabbed\n");
    assert_eq!(read("etc/greeting"), "hi world\n");
    assert_eq!(read("literal"), "keep $WHO\n");
}

#[test]
fn output_docker_archive_loads_and_runs_in_docker() {
    if !tools_present() || !docker_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nRUN echo from-kiln > /msg\nCMD [\"cat\", \"/msg\"]\n",
    )
    .unwrap();
    let archive = work.path().join("image.tar");
    let out = kiln(&root)
        .args(["build", "-q", "-t", "kiln-archive-test:1", "-o"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let load = Command::new("/usr/bin/docker")
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", output_text(&load));
    let run = Command::new("/usr/bin/docker")
        .args(["run", "--rm", "kiln-archive-test:1"])
        .output()
        .unwrap();
    let _ = Command::new("/usr/bin/docker")
        .args(["rmi", "-f", "kiln-archive-test:1"])
        .output();
    assert!(run.status.success(), "{}", output_text(&run));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "from-kiln\n");
}

#[test]
fn context_or_dockerfile_from_stdin() {
    if !tools_present() {
        return;
    }
    use std::io::Write as _;
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let build_from_stdin = |input: &[u8], dest: &Path| {
        let mut child = kiln(&root)
            .args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", dest.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    };
    let only_dockerfile = work.path().join("a");
    build_from_stdin(
        b"FROM busybox:local\nRUN echo piped > /p\n",
        &only_dockerfile,
    );
    assert_eq!(
        fs::read_to_string(only_dockerfile.join("p")).unwrap(),
        "piped\n"
    );
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nCOPY f /f\n",
    )
    .unwrap();
    fs::write(context.join("f"), "tarred\n").unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&context)
        .args(["-c", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let from_tar = work.path().join("b");
    build_from_stdin(&tar.stdout, &from_tar);
    assert_eq!(fs::read_to_string(from_tar.join("f")).unwrap(), "tarred\n");
}

#[test]
fn missing_copy_source_and_size_report() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let out = build_kiln_only(
        &root,
        &work.path().join("missing"),
        "FROM busybox:local\nCOPY nothere.txt /x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"nothere.txt\": not found") && stderr.contains(":2:"),
        "{stderr}"
    );

    let out = build_kiln_only(
        &root,
        &work.path().join("sizes"),
        "FROM busybox:local AS builder\nRUN dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null && echo app > /app\nFROM scratch\nCOPY --from=builder /app /app\n",
        &[],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("image size: 4"),
        "final image is just /app: {stderr}"
    );
    assert!(stderr.contains("stage builder: 10."), "{stderr}");
    assert!(
        stderr.contains("multi-stage:") && stderr.contains("% saved"),
        "{stderr}"
    );
}

/// `--exclude` needs a newer Dockerfile frontend than Docker 20.10's, so it
/// is checked against the reference's documented behaviour.
#[test]
fn copy_exclude_patterns() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    for (path, content) in [
        ("README.md", "r"),
        ("main.c", "m"),
        ("docs/guide.md", "g"),
        ("tmp/junk", "j"),
        ("a.txt", "a"),
        ("b.txt", "b"),
    ] {
        let full = context.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY --exclude=*.md --exclude=tmp --exclude=Dockerfile . /app/\nCOPY --exclude=b.txt *.txt /t/\n",
    )
    .unwrap();
    let dest = work.path().join("rootfs");
    let out = kiln(&root)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let mut found: Vec<String> = Vec::new();
    for top in ["app", "t"] {
        let mut stack = vec![dest.join(top)];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                found.push(path.strip_prefix(&dest).unwrap().display().to_string());
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![
            "app/a.txt",
            "app/b.txt",
            "app/docs",
            "app/docs/guide.md",
            "app/main.c",
            "t/a.txt"
        ]
    );
}

/// A build arg's value is part of the cache key of the steps that use it
/// (RUN sees every ARG in scope in its environment, as in BuildKit), not of
/// the others; build args no ARG declares change nothing.
#[test]
fn build_args_only_invalidate_steps_that_use_them() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nARG V=1\nCOPY f /f\nRUN echo $V > /v\nENV E=$V\n",
    )
    .unwrap();
    fs::write(context.join("f"), "f\n").unwrap();
    let build = |args: &[&str]| {
        let mut cmd = kiln(&root);
        cmd.args(["build", "--progress=plain"]);
        for arg in args {
            cmd.args(["--build-arg", arg]);
        }
        let out = cmd.arg(&context).output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let step_cached = |stderr: &str, step: &str| {
        let lines: Vec<&str> = stderr.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(step))
            .unwrap_or_else(|| panic!("no {step} in:\n{stderr}"));
        lines.get(at + 1).is_some_and(|l| l.ends_with("CACHED"))
    };
    build(&["V=1"]);
    let changed = build(&["V=2"]);
    assert!(step_cached(&changed, "COPY f /f"), "{changed}");
    assert!(!step_cached(&changed, "RUN echo $V"), "{changed}");
    let undeclared = build(&["V=2", "NOT_DECLARED=x"]);
    assert!(step_cached(&undeclared, "COPY f /f"), "{undeclared}");
    assert!(step_cached(&undeclared, "RUN echo $V"), "{undeclared}");
}

/// Independent stages are built at the same time: two stages that each
/// sleep a second, copied into a final stage, run their RUN steps at
/// overlapping times (read from the host-wide /proc/uptime); a stage the
/// target does not need is never built. (Timing is printed, not asserted:
/// on an idle 2-core machine the build takes about 1.5 s.)
#[test]
fn independent_stages_build_in_parallel() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    let run =
        "RUN cut -d' ' -f1 /proc/uptime > /start && sleep 1 && cut -d' ' -f1 /proc/uptime > /end";
    fs::write(
        context.join("Dockerfile"),
        format!("FROM busybox:local AS a\n{run}\nFROM busybox:local AS b\n{run}\nFROM busybox:local AS unused\nRUN exit 9\nFROM scratch\nCOPY --from=a /start /a-start\nCOPY --from=a /end /a-end\nCOPY --from=b /start /b-start\nCOPY --from=b /end /b-end\n"),
    )
    .unwrap();
    let dest = work.path().join("out");
    let started = std::time::Instant::now();
    let out = kiln(&root)
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("exit 9"),
        "unused stage was built: {stderr}"
    );
    let time = |name: &str| -> f64 {
        fs::read_to_string(dest.join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (a, b) = (
        (time("a-start"), time("a-end")),
        (time("b-start"), time("b-end")),
    );
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "RUN steps of independent stages did not overlap: a {a:?} b {b:?}\n{stderr}"
    );
    eprintln!("two independent 1 s stages built in {elapsed:?}");
    // Progress stays one event per line even with two steps running.
    for line in stderr.lines() {
        assert!(
            line.is_empty() || line.starts_with('#') || !line.contains('#'),
            "mixed progress line {line:?} in:\n{stderr}"
        );
    }
}

/// A failing stage stops the build with its own error; a stage running
/// meanwhile is killed rather than waited for.
#[test]
fn failing_stage_cancels_the_others() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let started = std::time::Instant::now();
    let out = build_kiln_only(
        &root,
        &work.path().join("ctx"),
        "FROM busybox:local AS slow\nRUN sleep 5\nRUN echo never > /never\nFROM busybox:local AS bad\nRUN sleep 0.3; echo broken >&2; exit 4\nFROM busybox:local\nCOPY --from=slow /never /never\nCOPY --from=bad /etc/passwd /p\n",
        &[],
    );
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exit code: 4"), "{stderr}");
    assert!(stderr.contains("broken"), "{stderr}");
    assert!(stderr.contains("stage bad"), "{stderr}");
    assert!(
        !stderr.contains("cancelled"),
        "the first error is shown: {stderr}"
    );
    assert!(!stderr.contains("[slow 3/3]"), "{stderr}");
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "the 5 s step was not cancelled: {elapsed:?}\n{stderr}"
    );
}

/// Secrets from a file or an environment variable reach the RUN that mounts
/// them (as a file or as an environment variable), stay out of the image and
/// its config, and are not part of the cache key: new secret content reuses
/// the cached step, as BuildKit does. A required secret that was not given,
/// and ssh mounts, fail with a clear message.
#[test]
fn secrets_reach_run_but_not_the_image_or_the_cache_key() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    let secret_file = work.path().join("secret.txt");
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nRUN --mount=type=secret,id=file --mount=type=secret,id=env,env=TOKEN,required=true wc -c < /run/secrets/file > /file-len && echo ${#TOKEN} > /env-len && test ! -e /run/secrets/env\n",
    )
    .unwrap();
    let build = |file_value: &str, env_value: &str, dest: &Path| {
        fs::write(&secret_file, file_value).unwrap();
        let out = kiln(&root)
            .args(["build", "--progress=plain", "-t", "secrets", "--secret"])
            .arg(format!("id=file,src={}", secret_file.display()))
            .args(["--secret", "id=env,env=KILN_TEST_SECRET_ENV"])
            .env("KILN_TEST_SECRET_ENV", env_value)
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&context)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first_dest = work.path().join("first");
    let first = build("file-secret-AAAA", "env-secret-BBBBBB", &first_dest);
    assert!(!first.contains("CACHED"), "{first}");
    assert_eq!(
        fs::read_to_string(first_dest.join("file-len")).unwrap(),
        "16\n"
    );
    assert_eq!(
        fs::read_to_string(first_dest.join("env-len")).unwrap(),
        "17\n"
    );
    assert!(!first_dest.join("run/secrets").exists());
    let second_dest = work.path().join("second");
    let second = build("changed-file-secret", "changed-env", &second_dest);
    assert!(
        second.lines().any(|l| l.ends_with("CACHED")),
        "new secret values must not invalidate the step:\n{second}"
    );
    // The step was not re-run: the image still has the first lengths.
    assert_eq!(
        fs::read_to_string(second_dest.join("file-len")).unwrap(),
        "16\n"
    );
    let inspect = kiln(&root).args(["inspect", "secrets"]).output().unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    for value in ["file-secret-AAAA", "env-secret-BBBBBB", "changed-env"] {
        assert!(!text.contains(value), "{value} in the config: {text}");
        assert!(
            !first.contains(value) && !second.contains(value),
            "{value} in the log"
        );
    }

    // A required secret that was not given.
    let out = kiln(&root)
        .args(["build", "--progress=plain"])
        .arg(&context)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret env not found") && stderr.contains("--secret id=env"),
        "{stderr}"
    );
    // ssh mounts are refused with a reason.
    let out = build_kiln_only(
        &root,
        &work.path().join("ssh"),
        "FROM busybox:local\nRUN --mount=type=ssh true\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("type=ssh is not supported"), "{stderr}");
    // A secret file that does not exist is a command-line error.
    let out = kiln(&root)
        .args(["build", "--secret", "id=x,src=/nonexistent/secret"])
        .arg(&context)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/secret"),
        "{}",
        output_text(&out)
    );
}

/// Heredocs need a newer Dockerfile frontend than Docker 20.10's, and RUN
/// --network too, so these are checked against BuildKit's documented
/// behaviour: a heredoc starting with `#!` runs as a script file through its
/// interpreter; `--network=none` (and `kiln build --network none`) leave only
/// loopback.
#[test]
fn shebang_heredocs_and_run_network() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nRUN <<EOF\n#!/bin/sh -e\necho \"script $(basename $0)\" > /script\nEOF\nRUN <<AWK\n#!/bin/awk -f\nBEGIN { print \"from awk\" > \"/awk.txt\" }\nAWK\nRUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces-none\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces-default\n",
    )
    .unwrap();
    let dest = work.path().join("out");
    let out = kiln(&root)
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let read = |name: &str| fs::read_to_string(dest.join(name)).unwrap_or_default();
    assert_eq!(read("script"), "script EOF\n");
    assert_eq!(read("awk.txt"), "from awk\n");
    assert_eq!(read("ifaces-none"), "lo\n");
    assert!(!dest.join("run").exists(), "script mount left a trace");
    // --network none on the command line applies to RUN steps without --network.
    let dest = work.path().join("out-none");
    let out = kiln(&root)
        .args(["build", "--no-cache", "--network", "none", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(read_in(&dest, "ifaces-default"), "lo\n");
}

fn read_in(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Cache sharing between concurrent users (two independent stages run at
/// the same time): `private` gives the second one a fresh cache, so each
/// sees only its own file; `locked` makes the second wait for the first.
#[test]
fn cache_mount_sharing_between_parallel_stages() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    for sharing in ["private", "locked"] {
        let context = work.path().join(sharing);
        fs::create_dir_all(&context).unwrap();
        let run = |who: &str| {
            format!(
                "RUN --mount=type=cache,id=c,target=/c,sharing={sharing} cut -d' ' -f1 /proc/uptime > /start && echo {who} > /c/who && sleep 1 && cat /c/who > /saw && cut -d' ' -f1 /proc/uptime > /end"
            )
        };
        fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM busybox:local AS a\n{}\nFROM busybox:local AS b\n{}\nFROM scratch\nCOPY --from=a /saw /a-saw\nCOPY --from=a /start /a-start\nCOPY --from=a /end /a-end\nCOPY --from=b /saw /b-saw\nCOPY --from=b /start /b-start\nCOPY --from=b /end /b-end\n",
                run("a"),
                run("b")
            ),
        )
        .unwrap();
        let dest = work.path().join(format!("{sharing}-out"));
        let out = kiln(&root)
            .args(["build", "--progress=plain", "-o"])
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&context)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(read_in(&dest, "a-saw"), "a\n", "{sharing}");
        assert_eq!(read_in(&dest, "b-saw"), "b\n", "{sharing}");
        let time = |name: &str| -> f64 { read_in(&dest, name).trim().parse().unwrap() };
        let overlap = time("a-start") < time("b-end") && time("b-start") < time("a-end");
        match sharing {
            "private" => assert!(overlap, "private users should run concurrently"),
            _ => assert!(!overlap, "locked users must not overlap"),
        }
    }
}

/// `--progress=tty` (and auto on a terminal) draws BuildKit's live view: a
/// header with the elapsed time and steps done, a line per step finished
/// with its time or CACHED. Run under script(1) for a pseudo-terminal.
#[test]
fn tty_progress_view_on_a_terminal() {
    if !tools_present()
        || !diff_common::require(
            "script (util-linux)",
            Command::new("script").arg("--version"),
        )
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox:local\nRUN echo building-output && sleep 0.3\nCOPY f /f\n",
    )
    .unwrap();
    fs::write(context.join("f"), "f\n").unwrap();
    let kiln_path = image_common::kiln_bin();
    let view = |progress: &str| {
        let command = format!(
            "{} --root {} build --progress={progress} {}",
            kiln_path,
            root.display(),
            context.display()
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("KILN_ROOT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = view("tty");
    assert!(first.contains("[+] Building"), "{first}");
    assert!(
        first.contains(" => [2/3] RUN echo building-output"),
        "{first}"
    );
    // The header's last count: every step started is done.
    let last_count = first
        .rsplit('(')
        .find_map(|part| {
            let (done, rest) = part.split_once('/')?;
            let (all, _) = rest.split_once(')')?;
            Some((done.parse::<u32>().ok()?, all.parse::<u32>().ok()?))
        })
        .unwrap_or_default();
    assert!(
        last_count.0 == last_count.1 && last_count.0 >= 3,
        "{last_count:?} steps done: {first}"
    );
    assert!(
        !first.contains("#1 "),
        "no plain lines on a terminal: {first}"
    );
    let second = view("auto");
    assert!(second.contains(" => CACHED [2/3] RUN"), "{second}");
    assert!(second.contains(" => CACHED [3/3] COPY f /f"), "{second}");
}

/// `--build-context` (needs buildx, which Docker 20.10 lacks, so checked
/// against BuildKit's documented behaviour): a directory serves `COPY
/// --from=NAME`, `RUN --mount=from=NAME` and `FROM NAME`; a
/// `docker-image://REF` replaces the image NAME. Its contents are in the
/// cache keys: a no-op rebuild is all cached, a changed file re-runs the
/// COPY that reads it.
#[test]
fn named_build_contexts() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    let other = work.path().join("other");
    fs::create_dir_all(&context).unwrap();
    fs::create_dir_all(other.join("sub")).unwrap();
    fs::write(other.join("data.txt"), "data\n").unwrap();
    fs::write(other.join("sub/deep"), "deep\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM base AS b\nRUN echo from-base > /b\nFROM files AS f\nFROM busybox:local\nCOPY --from=extra data.txt /x\nCOPY --from=extra sub /sub\nCOPY --from=b /b /b\nCOPY --from=f /data.txt /f-data\nRUN --mount=from=extra,target=/m cat /m/data.txt > /mounted\n",
    )
    .unwrap();
    let build = |dest: &Path| {
        let out = kiln(&root)
            .args(["build", "--progress=plain", "--build-context"])
            .arg(format!("extra={}", other.display()))
            .args(["--build-context", "base=docker-image://busybox:local"])
            .arg("--build-context")
            .arg(format!("files={}", other.display()))
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&context)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dest = work.path().join("out1");
    build(&dest);
    assert_eq!(read_in(&dest, "x"), "data\n");
    assert_eq!(read_in(&dest, "sub/deep"), "deep\n");
    assert_eq!(read_in(&dest, "b"), "from-base\n");
    assert_eq!(read_in(&dest, "f-data"), "data\n");
    assert_eq!(read_in(&dest, "mounted"), "data\n");
    let again = build(&work.path().join("out2"));
    assert!(
        again.contains("built in") && again.contains(" 0 steps run"),
        "{again}"
    );
    fs::write(other.join("sub/deep"), "changed\n").unwrap();
    let dest = work.path().join("out3");
    let changed = build(&dest);
    assert_eq!(read_in(&dest, "sub/deep"), "changed\n");
    let lines: Vec<&str> = changed.lines().collect();
    let copy_sub = lines
        .iter()
        .position(|l| l.contains("COPY --from=extra sub /sub"))
        .unwrap();
    assert!(!lines[copy_sub + 1].ends_with("CACHED"), "{changed}");
    // A named context must exist.
    let out = kiln(&root)
        .args(["build", "--build-context", "x=/nonexistent/dir"])
        .arg(&context)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}

/// A stage starts at once and waits for another only at the step that needs
/// it: the final stage's own RUN overlaps the builder stage's RUN.
#[test]
fn steps_before_copy_from_run_while_the_source_stage_builds() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    let run = |prefix: &str| {
        format!(
            "RUN cut -d' ' -f1 /proc/uptime > /{prefix}-start && sleep 1 && cut -d' ' -f1 /proc/uptime > /{prefix}-end"
        )
    };
    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM busybox:local AS builder\n{}\nFROM busybox:local\n{}\nCOPY --from=builder /b-start /b-end /\n",
            run("b"),
            run("f")
        ),
    )
    .unwrap();
    let dest = work.path().join("out");
    let out = kiln(&root)
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let time = |name: &str| -> f64 { read_in(&dest, name).trim().parse().unwrap() };
    assert!(
        time("f-start") < time("b-end") && time("b-start") < time("f-end"),
        "the final stage's RUN waited for the builder:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
