//! Several GPUs in one window, on a fake NVML node of 4 scripted boards (`fake::FakeNode`):
//! `--devices` and `CUDA_VISIBLE_DEVICES` (by index and by UUID) select the right devices,
//! bad selections are refused with the reason, each device's energy is listed and boundary G is
//! their sum, the node's other GPUs are named as not metered, and `exec` of a program that
//! starts two worker processes gets per-device energies that add up to its total.

mod common;

use joulebench::analyse::report::model::EnergyClass;
use joulebench::measure::devices::{self, parse_devices, DeviceSpec};
use joulebench::measure::fake::{FakeGpu, FakeNode};
use joulebench::measure::gpu::DeviceError;
use joulebench::measure::{Boundary, MeasuredWindow, Meter, Source};
use joulebench::orchestrate::exec::{self, events::Tracked, ExecPlan, ExecTask};
use joulebench::record::curve::Status;
use joulebench::record::{EngineInfo, ResultsDir, RunRecord};
use joulebench::spec::task::Direction;
use joulebench::spec::variant;
use std::time::{Duration, Instant};

const WATTS: [f64; 4] = [100.0, 200.0, 300.0, 400.0];

fn node() -> FakeNode {
    FakeNode::new(&WATTS)
}

fn indices(spec: &str, visible: Option<&str>) -> Result<Vec<u32>, DeviceError> {
    let spec = parse_devices(spec).expect("syntax");
    devices::select(&node(), &spec, visible).map(|s| s.indices)
}

#[test]
fn devices_are_selected_by_index_uuid_and_cuda_visible_devices() {
    assert_eq!(indices("all", None), Ok(vec![0, 1, 2, 3]));
    assert_eq!(indices("2,0", None), Ok(vec![2, 0]));
    assert_eq!(indices("GPU-00000003-fake,1", None), Ok(vec![3, 1]));
    // --devices wins over CUDA_VISIBLE_DEVICES.
    assert_eq!(indices("1", Some("2,3")), Ok(vec![1]));

    let visible = |v: Option<&str>| devices::select(&node(), &DeviceSpec::Visible, v);
    let s = visible(Some("1,3")).unwrap();
    assert_eq!(s.indices, [1, 3]);
    assert_eq!(s.uuids, ["GPU-00000001-fake", "GPU-00000003-fake"]);
    assert!(s
        .note
        .as_deref()
        .unwrap()
        .contains("CUDA_VISIBLE_DEVICES=1,3"));
    assert_eq!(
        visible(Some("GPU-00000002-fake, GPU-00000000-fake"))
            .unwrap()
            .indices,
        [2, 0]
    );
    let s = visible(None).unwrap();
    assert_eq!(s.indices, [0]);
    assert!(
        s.note.as_deref().unwrap().contains("device 0 only"),
        "{s:?}"
    );
}

#[test]
fn a_device_that_is_not_on_the_node_is_refused_with_the_reason() {
    let e = indices("0,7", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "GPU 7 does not exist: NVML sees 4 device(s), 0 to 3"
    );
    let e = indices("GPU-deadbeef", None).unwrap_err();
    assert_eq!(e.to_string(), "GPU-deadbeef is not a GPU of this node");
    let e = devices::select(&node(), &DeviceSpec::Visible, Some("0,GPU-nowhere")).unwrap_err();
    assert!(e.to_string().contains("GPU-nowhere"), "{e}");
    let e = devices::select(&node(), &DeviceSpec::Visible, Some("MIG-1234")).unwrap_err();
    assert_eq!(e.to_string(), "MIG-1234 is not a GPU of this node");
    let empty = FakeNode::new(&[]);
    assert_eq!(
        devices::select(&empty, &DeviceSpec::All, None),
        Err(DeviceError::NoDevices)
    );
}

fn assert_close(energy_j: f64, want_j: f64, what: &str) {
    assert!(
        (energy_j - want_j).abs() <= 0.02 * want_j,
        "{what}: {energy_j:.2} J, expected {want_j:.2} J"
    );
}

#[test]
fn each_device_is_listed_and_boundary_g_is_their_sum() {
    let n = node();
    let sel = devices::select(&n, &parse_devices("1,3").unwrap(), None).unwrap();
    let mut m = devices::meter(&n, &sel).unwrap();
    assert_eq!(m.boundary(), Boundary::Gpu);
    let t0 = Instant::now();
    let w = MeasuredWindow::open(&mut m, &joulebench::measure::fake::NoSync).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let r = w.close().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let names: Vec<&str> = r
        .report
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(names, ["gpu:1", "gpu:3"]);
    assert_close(r.report.components[0].energy_j, 200.0 * secs, "gpu:1");
    assert_close(r.report.components[1].energy_j, 400.0 * secs, "gpu:3");
    let sum: f64 = r.report.components.iter().map(|c| c.energy_j).sum();
    assert!((r.total_j() - sum).abs() < 1e-9);
    assert!(r
        .report
        .components
        .iter()
        .all(|c| c.source == Source::MeasuredCounter));
    let host = &r.report.provenance.host;
    assert_eq!(
        host.gpus_not_metered.as_deref(),
        Some(
            &[
                "nvml 0 (Fake GPU)".to_string(),
                "nvml 2 (Fake GPU)".to_string()
            ][..]
        )
    );
    assert_eq!(
        host.gpu_devices.as_deref(),
        Some("nvml 1,3: as asked (--devices)")
    );
}

/// A program that starts two worker processes (as torchrun starts one per GPU), waits for
/// them, then reports the target.
const TWO_WORKERS: &str = r#"
ml() { printf ':::MLLOG {"namespace": "", "time_ms": %s, "event_type": "%s", "key": "%s", "value": %s, "metadata": %s}\n' "$(date +%s%3N)" "$1" "$2" "$3" "$4"; }
ml INTERVAL_START run_start null '{}'
sleep 0.8 & sleep 0.8 &
wait
ml POINT_IN_TIME eval_accuracy 0.99 '{"epoch_num": 1, "step": 100}'
ml INTERVAL_END run_stop null '{"status": "success"}'
"#;

/// `exec` of `TWO_WORKERS` metered on `selection` of `node`, with a 0.5 s idle baseline: the
/// run as read back from its file.
fn exec_on(node: &FakeNode, selection: &devices::Selection) -> RunRecord {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = devices::meter(node, selection).unwrap();
    let device_label = format!("cuda (nvml {})", selection.label());
    let plan = ExecPlan {
        task: ExecTask {
            name: "exec-two-workers".into(),
            metric: "eval_accuracy".into(),
            tracked: Tracked {
                key: "eval_accuracy".into(),
                direction: Direction::Higher,
            },
            target: 0.9,
            chance: 0.1,
            spec: None,
        },
        variant: variant::baseline(),
        seeds: vec![1],
        argv: vec!["bash".into(), "-c".into(), TWO_WORKERS.into()],
        events: None,
        engine: EngineInfo {
            kind: "exec".into(),
            label: "exec: two workers".into(),
            framework: None,
            program: "bash".into(),
        },
        engine_user_label: None,
        engine_slug: "exec-bash".into(),
        device_label: device_label.clone(),
        results: ResultsDir::open(tmp.path()).unwrap(),
        system: joulebench::orchestrate::runner::system_of(&device_label, &[]),
        idle_s: 0.5,
        cooldown_s: 0.0,
        stop_at_target: false,
        grace_s: 1.0,
        time_limit_s: Some(30.0),
        env: exec::child_env(Some(selection.uuids.join(","))),
        stdout_to_stderr: true,
    };
    let recs = exec::run_series(&plan, &mut m, &[], |_| {}).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, Status::Ok, "{:?}", recs[0].error);
    let read = joulebench::record::read::read_run(&plan.results.run_path(&recs[0].run_id)).unwrap();
    assert_eq!(read.device, device_label);
    read
}

#[test]
fn exec_of_a_two_process_program_sums_its_devices_to_boundary_g() {
    let n = node();
    let sel = devices::select(&n, &DeviceSpec::Visible, Some("GPU-00000000-fake,2")).unwrap();
    let cuda_visible = ("CUDA_VISIBLE_DEVICES".to_string(), sel.uuids.join(","));
    assert_eq!(cuda_visible.1, "GPU-00000000-fake,GPU-00000002-fake");
    assert!(
        exec::child_env(Some(sel.uuids.join(","))).contains(&cuda_visible)
            || std::env::var_os("CUDA_VISIBLE_DEVICES").is_some()
    );
    let read = exec_on(&n, &sel);
    let e = &read.energy;
    assert_eq!(e.boundary, Boundary::Gpu);
    assert_eq!(e.meter, "nvml");
    let names: Vec<&str> = e.components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["gpu:0", "gpu:2"]);
    let sum: f64 = e.components.iter().map(|c| c.energy_j).sum();
    assert!((e.total_j - sum).abs() < 1e-6, "{} vs {sum}", e.total_j);
    assert_close(e.components[0].energy_j, 100.0 * e.window_s, "gpu:0");
    assert_close(e.components[1].energy_j, 300.0 * e.window_s, "gpu:2");
    // The idle baseline per device.
    assert_close(e.idle_component_w["gpu:0"], 100.0, "idle gpu:0");
    assert_close(e.idle_component_w["gpu:2"], 300.0, "idle gpu:2");
    assert_close(e.idle_w.unwrap(), 400.0, "idle total");
    let host = &read.provenance.host;
    assert!(host
        .gpu_devices
        .as_deref()
        .unwrap()
        .starts_with("nvml 0,2: the devices CUDA_VISIBLE_DEVICES="));
    assert_eq!(
        host.gpus_not_metered.as_deref().map(<[String]>::len),
        Some(2)
    );
    // The job had the boards to itself: ranked with exclusive runs, nothing attributed.
    assert!(
        !e.flags.iter().any(|f| f == "gpu_shared" || f == "gpu_mig"),
        "{:?}",
        e.flags
    );
    assert!(e.attributed.is_empty());
    assert_eq!(EnergyClass::of(&read), EnergyClass::Measured);
    let g = &read.provenance.gpus["gpu:0"];
    assert_eq!(g.job_time_share, Some(1.0));
    assert_eq!(g.job_sm_share, Some(1.0));
}

#[test]
fn a_worker_the_job_started_is_the_job_not_a_co_tenant() {
    // A process this test started (a descendant of the measuring process) on the board.
    let mut worker = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let n = FakeNode::of(vec![FakeGpu::new(250.0).with_process(worker.id(), 40, 50)]);
    let sel = devices::select(&n, &DeviceSpec::All, None).unwrap();
    let read = exec_on(&n, &sel);
    worker.kill().unwrap();
    worker.wait().unwrap();
    let e = &read.energy;
    assert!(!e.flags.iter().any(|f| f == "gpu_shared"), "{:?}", e.flags);
    let g = &read.provenance.gpus["gpu:0"];
    assert!(g.other_compute_pids.is_empty(), "{g:?}");
    assert_eq!(g.job_sm_share, Some(1.0));
    assert_eq!(EnergyClass::of(&read), EnergyClass::Measured);
}

#[test]
fn a_gpu_another_job_uses_is_shared_attributed_and_never_ranked_with_exclusive_runs() {
    // PID 1 is never a descendant of this process: another user's job on board 0.
    let n = FakeNode::of(vec![
        FakeGpu::new(200.0).with_process(1, 30, 90),
        FakeGpu::new(300.0),
    ]);
    let sel = devices::select(&n, &DeviceSpec::All, None).unwrap();
    let read = exec_on(&n, &sel);
    let e = &read.energy;
    assert!(e.flags.iter().any(|f| f == "gpu_shared"), "{:?}", e.flags);
    assert_eq!(EnergyClass::of(&read), EnergyClass::Shared);
    // The whole-device energy is kept as the figure.
    assert_close(e.components[0].energy_j, 200.0 * e.window_s, "whole device");
    let g = &read.provenance.gpus["gpu:0"];
    assert_eq!(g.other_compute_pids, [1]);
    // Every poll saw the job and one other: half the time; 90 of every 120 SM points.
    assert_eq!(g.job_time_share, Some(0.5));
    assert!((g.job_sm_share.unwrap() - 0.75).abs() < 1e-9, "{g:?}");
    // Kepler's rule on board 0 only (board 1 was the job's alone). The fake draws its idle
    // power throughout, so its energy is all idle: the job's share is half of it.
    assert_eq!(e.attributed.keys().collect::<Vec<_>>(), ["gpu:0"]);
    let a = &e.attributed["gpu:0"];
    assert_close(a.idle_w, 200.0, "idle");
    let idle_j = (a.idle_w * e.window_s).min(e.components[0].energy_j);
    let want = (e.components[0].energy_j - idle_j) * 0.75 + idle_j * 0.5;
    assert!((a.energy_j - want).abs() < 1e-6, "{a:?}");
    assert!(a.rule.starts_with("kepler"));
}

#[test]
fn a_mig_instance_is_metered_as_its_whole_gpu_once_and_named() {
    let n = FakeNode::of(vec![
        FakeGpu::new(100.0),
        FakeGpu::new(350.0).with_mig(&["Fake GPU MIG 3g.40gb", "Fake GPU MIG 4g.40gb"]),
    ]);
    // Both instances of board 1, as a job given two slices would see them.
    let sel = devices::select(
        &n,
        &DeviceSpec::Visible,
        Some("MIG-00000001-fake-0,MIG-00000001-fake-1"),
    )
    .unwrap();
    assert_eq!(sel.indices, [1], "the board once");
    assert_eq!(sel.uuids, ["MIG-00000001-fake-0", "MIG-00000001-fake-1"]);
    assert_eq!(
        sel.mig,
        [
            "MIG-00000001-fake-0 (Fake GPU MIG 3g.40gb) on nvml 1",
            "MIG-00000001-fake-1 (Fake GPU MIG 4g.40gb) on nvml 1"
        ]
    );
    assert_eq!(
        parse_devices("MIG-00000001-fake-0")
            .map(|s| devices::select(&n, &s, None).map(|x| x.indices)),
        Ok(Ok(vec![1]))
    );
    let read = exec_on(&n, &sel);
    assert!(
        read.energy.flags.iter().any(|f| f == "gpu_mig"),
        "{:?}",
        read.energy.flags
    );
    let host = &read.provenance.host;
    let said = host.gpu_devices.as_deref().unwrap();
    assert!(
        said.contains("Fake GPU MIG 3g.40gb") && said.contains("whole GPU"),
        "{said}"
    );
    assert_close(
        read.energy.total_j,
        350.0 * read.energy.window_s,
        "the whole GPU",
    );
}

#[test]
fn a_mig_gpu_is_labelled_with_its_instances_and_not_ranked_with_exclusive_runs() {
    let n = FakeNode::of(vec![
        FakeGpu::new(350.0).with_mig(&["Fake GPU MIG 3g.40gb", "Fake GPU MIG 4g.40gb"])
    ]);
    let sel = devices::select(&n, &DeviceSpec::All, None).unwrap();
    let read = exec_on(&n, &sel);
    assert!(
        read.energy.flags.iter().any(|f| f == "gpu_mig"),
        "{:?}",
        read.energy.flags
    );
    assert_eq!(EnergyClass::of(&read), EnergyClass::Shared);
    assert_eq!(
        read.provenance.gpus["gpu:0"].mig_instances.as_deref(),
        Some(
            &[
                "Fake GPU MIG 3g.40gb".to_string(),
                "Fake GPU MIG 4g.40gb".to_string()
            ][..]
        )
    );
}

#[test]
fn bad_devices_on_the_command_line_are_one_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let r = res.display().to_string();
    let trainer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec/fake-trainer.sh")
        .display()
        .to_string();
    for (devices, says) in [
        (vec!["--devices", "99"], "--devices 99"),
        (vec!["--devices", "0,zero"], "'zero' is not an NVML index"),
        (vec!["--devices", "0,0"], "listed twice"),
        (vec!["--devices", "GPU-not-here"], "--devices GPU-not-here"),
        (
            vec!["--devices", "0", "--device", "cuda:0"],
            "cannot be used with",
        ),
    ] {
        let mut args = vec![
            "exec",
            "--task",
            "mnist-mlp",
            "--meter",
            "estimate",
            "--idle-s",
            "0",
            "--results",
            &r,
        ];
        args.extend(devices.iter().copied());
        args.extend(["--", "bash", &trainer, "ok"]);
        let o = common::joulebench(&args);
        assert_eq!(o.code, 2, "{devices:?}: {}", o.stderr);
        assert_eq!(
            o.stderr.trim().lines().count(),
            1,
            "{devices:?}: {}",
            o.stderr
        );
        assert!(o.stderr.contains(says), "{devices:?}: {}", o.stderr);
        assert!(!res.exists(), "{devices:?}: nothing written");
    }
}

#[test]
fn a_suites_exec_entry_with_devices_is_metered_on_its_own_gpus() {
    use joulebench::engine::train::NoObserver;
    use joulebench::measure::fake::{FakeComponent, FakeMeter};
    use joulebench::orchestrate::host;
    use joulebench::orchestrate::runner::{Plan, Session};
    use joulebench::orchestrate::sweep::{plan, run};
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("two-workers.sh");
    std::fs::write(&script, TWO_WORKERS).unwrap();
    let suite_path = tmp.path().join("suite.toml");
    std::fs::write(
        &suite_path,
        suite_with_exec(0.3, &format!("\"bash\", \"{}\"", script.display()), "3,1"),
    )
    .unwrap();
    let models = joulebench::spec::task::default_models_dir();
    let suite = plan::load_suite(&suite_path).unwrap();
    let file = plan::expand(&suite, &models).unwrap();
    let tasks = run::load_tasks(&file, None, &candle_core::Device::Cpu).unwrap();
    let results = ResultsDir::open(&tmp.path().join("res")).unwrap();
    run::claim_folder(&results, &file).unwrap();
    let runner_plan = Plan {
        tasks,
        jobs: Vec::new(),
        device: candle_core::Device::Cpu,
        device_label: "cpu".to_string(),
        results: results.clone(),
        idle_s: file.settings.idle_s,
        cooldown_s: 0.0,
        stop_at_target: file.settings.stop_at_target,
        forecast_stop: false,
        checkpoint: None,
        inference: None,
    };
    // The sweep's own meter: the host, as on a machine whose GPUs only the program uses.
    let mut host_meter = FakeMeter::new(vec![FakeComponent::new(
        "cpu",
        Boundary::Host,
        Source::MeasuredCounter,
        20.0,
    )]);
    let mut session = Session::new(&runner_plan, &mut host_meter, &[]).unwrap();
    let scheduler = host::scheduler_info(&host::ProcessEnv, None);
    let n = node();
    let out = run::run_shard(
        &file,
        (0, 1),
        &runner_plan,
        &mut session,
        &scheduler,
        Some(&n),
        false,
        || {},
        |_| Box::new(NoObserver),
        |_| {},
    )
    .unwrap();
    assert_eq!(out.records.len(), 2, "the native run and the program's");
    let native = out
        .records
        .iter()
        .find(|r| r.engine_label().contains("candle"))
        .unwrap();
    let program = out
        .records
        .iter()
        .find(|r| r.engine_label().starts_with("exec"))
        .unwrap();
    // joulebench's own run: the sweep's meter.
    assert_eq!(native.energy.boundary, Boundary::Host);
    // The program's: its two GPUs on a meter of their own, with their own idle baseline.
    assert_eq!(program.status, Status::Ok, "{:?}", program.error);
    assert_eq!(program.device, "cuda (nvml 3,1)");
    let e = &program.energy;
    assert_eq!(e.boundary, Boundary::Gpu);
    let names: Vec<&str> = e.components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["gpu:3", "gpu:1"]);
    assert_close(e.components[0].energy_j, 400.0 * e.window_s, "gpu:3");
    assert_close(e.components[1].energy_j, 200.0 * e.window_s, "gpu:1");
    assert_close(e.idle_component_w["gpu:3"], 400.0, "idle gpu:3");
    assert_eq!(
        program.provenance.host.gpu_devices.as_deref(),
        Some("nvml 3,1: [[exec]] 'ddp' devices = \"3,1\"")
    );
}

#[test]
fn a_suites_devices_without_nvml_or_with_bad_syntax_is_one_line_and_writes_nothing() {
    if joulebench::measure::nvml_gpu::init().is_ok() {
        eprintln!("skip: NVML present here, so `devices = \"0\"` may be valid");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    for (devices, says) in [
        ("0", "[[exec]] devices: meter nvml unavailable"),
        ("0,x", "exec 'ddp': devices '0,x': 'x' is not an NVML index"),
    ] {
        let cfg = tmp.path().join("suite.toml");
        std::fs::write(&cfg, suite_with_exec(0.0, "\"true\"", devices)).unwrap();
        let o = common::joulebench(&[
            "sweep",
            "--config",
            cfg.to_str().unwrap(),
            "--results",
            res.to_str().unwrap(),
            "--meter",
            "estimate",
            "--device",
            "cpu",
        ]);
        assert_eq!(o.code, 2, "{devices}: {}", o.stderr);
        assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
        assert!(o.stderr.contains(says), "{devices}: {}", o.stderr);
        assert!(!res.exists(), "nothing written");
    }
}

#[test]
fn one_node_of_four_with_a_busy_board_and_a_mig_board_labels_each_and_is_not_ranked() {
    // Board 1 runs someone else's job (PID 1), board 2 is MIG-partitioned, 0 and 3 are idle
    // apart from the job.
    let n = FakeNode::of(vec![
        FakeGpu::new(100.0).with_uuid("GPU-00000000-fake"),
        FakeGpu::new(200.0)
            .with_uuid("GPU-00000001-fake")
            .with_process(1, 50, 50),
        FakeGpu::new(300.0)
            .with_uuid("GPU-00000002-fake")
            .with_mig(&["Fake GPU MIG 7g.80gb"]),
        FakeGpu::new(400.0).with_uuid("GPU-00000003-fake"),
    ]);
    // By index and by UUID, as a scheduler sets it.
    let sel = devices::select(&n, &DeviceSpec::Visible, Some("0,GPU-00000001-fake,2")).unwrap();
    assert_eq!(sel.indices, [0, 1, 2]);
    let read = exec_on(&n, &sel);
    let e = &read.energy;
    let names: Vec<&str> = e.components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["gpu:0", "gpu:1", "gpu:2"]);
    assert_close(e.total_j, 600.0 * e.window_s, "G, the three boards");
    assert!(e.flags.iter().any(|f| f == "gpu_shared"), "{:?}", e.flags);
    assert!(e.flags.iter().any(|f| f == "gpu_mig"), "{:?}", e.flags);
    assert_eq!(EnergyClass::of(&read), EnergyClass::Shared);
    let g = &read.provenance.gpus;
    assert!(g["gpu:0"].other_compute_pids.is_empty());
    assert_eq!(g["gpu:1"].other_compute_pids, [1]);
    assert_eq!(
        g["gpu:2"].mig_instances.as_deref().map(<[String]>::len),
        Some(1)
    );
    assert_eq!(e.attributed.keys().collect::<Vec<_>>(), ["gpu:1"]);
    assert_eq!(
        read.provenance.host.gpus_not_metered.as_deref(),
        Some(&["nvml 3 (Fake GPU)".to_string()][..])
    );
}

/// A one-seed `digits-mlp` suite with one `[[exec]]` entry `ddp` running `command` (the TOML
/// array's items) on `devices`.
fn suite_with_exec(idle_s: f64, command: &str, devices: &str) -> String {
    format!(
        "name = \"gpus-test\"\ndescription = \"test\"\ntasks = [\"digits-mlp\"]\n\
         variants = [\"f32\"]\nseeds = 1\nidle_s = {idle_s:?}\ncooldown_s = 0.0\n\n\
         [[exec]]\nname = \"ddp\"\ncommand = [{command}]\ntasks = [\"digits-mlp\"]\n\
         variants = [\"f32\"]\ndevices = \"{devices}\"\n"
    )
}
