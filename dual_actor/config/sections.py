"""The top-level config of ``python -m dual_actor.fit`` and its fixed-shape sections (``conf/config.yaml``,
``conf/env``, ``conf/trainer``), one declaration per key.

``warmup=False`` marks what only the online phase, evaluation or logging reads: runs that differ only there
share a warm-up (``warmup.share=true``, :func:`dual_actor.training.warmup_cache.warmup_fingerprint`).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from data_tools.talk_tweak import DEFAULT_LABEL, LABELS, SIGMA_M, WINDOW
from dual_actor.config.algo import AlgoConfig
from dual_actor.config.fields import ConfigError, check_choices, setting


@dataclass
class DemosConfig:
    """Scripted-expert demos a simulated env records when ``data.path`` is absent."""

    episodes_per_task: int = setting(20, "episodes per task (the paper: 20)")
    noise: float = setting(0.1, "std of the noise on the expert's actions")
    max_episode_steps: int = setting(200, "time limit of a demo episode")


@dataclass
class EnvConfig:
    """``conf/env``: the world the policy acts in and the dataset's layout."""

    name: str = setting("???", "names the default data file (data.path)")
    tasks: List[str] = setting("???", "task strings, in task-id order")
    obs_key: str = setting("state", "obs/<key> in the HDF5 file: the state vector")
    obs_dim: Optional[int] = setting(None, "state size (null: the data file's obs/<obs_key> width)")
    proprio_key: str = setting("proprio", "obs/<key> of the proprioception")
    proprio_dim: Optional[int] = setting(None, "proprioception size (null: the data file's obs/<proprio_key> width)")
    action_dim: Optional[int] = setting(None, "action size (null: the data file's actions width)")
    fps: int = setting(10, "control rate (Hz)")
    robot: Any = setting(None, "a RobotEnv factory (Hydra _target_ with _partial_: true) for the online phase and "
                               "evaluation (null: warm-up only)")
    robot_shift: Any = setting(None, "robot B of a multi-robot run (runtime.robots >= 2: odd robots) and "
                                     "eval.robot_b: a fixed frame error (a Hydra _target_)")
    demo_generator: Any = setting(None, "writes scripted-expert demos when data.generate_if_missing and data.path "
                                        "is absent (a Hydra _target_ with _partial_: true)")
    demos: DemosConfig = setting(DemosConfig(), "what demo_generator records")
    q_bounds: Optional[List[float]] = setting(None, "[lo, hi] of the discounted return if known (e.g. [0, 1]: a "
                                                    "sparse success reward that ends the episode)")
    cameras: List[str] = setting([], "camera images obs/<camera> to render / read")
    image_size: Optional[int] = setting(None, "the cameras' H = W (null: whatever the file holds)")
    state_dims: Optional[int] = setting(None, "the policy's and critics' state: the leading state_dims entries of "
                                              "obs/<obs_key> (the robot's observation vector; the operator and the "
                                              "scripted expert still see all of it); null: all of it")
    obs_mode: Optional[str] = setting(None, "a named observation layout of obs_modes (e.g. gym-hil: state | pixels); "
                                            "null: none")
    obs_modes: Dict[str, Any] = setting({}, "obs_mode -> the keys it sets (cameras, state_dims), read by the env's "
                                            "yaml through interpolations")
    translation_scale_m: float = setting(0.01, "metres per action unit of the translational dims (Metaworld: "
                                               "0.01); online.translation_scale_m follows it")

    def __post_init__(self) -> None:
        if self.state_dims is not None and self.state_dims < 1:
            raise ConfigError(f"env.state_dims must be >= 1 (or null: the whole state), got {self.state_dims}")
        if self.state_dims is not None and self.obs_dim is not None and self.state_dims > self.obs_dim:
            raise ConfigError(f"env.state_dims={self.state_dims} exceeds env.obs_dim={self.obs_dim}")


@dataclass
class MetaworldBenchConfig(EnvConfig):
    """The built-in simulated bench: Metaworld 3.1.1, three tasks standing in for the paper's (README.md, docs/results.md)."""

    render_effects: bool = setting(False, "shadows + reflections when rendering cameras (7x dearer on a CPU "
                                          "renderer)")


@dataclass
class FrankaServerEnvConfig(EnvConfig):
    """A Franka arm through the HIL-SERL / ConRFT robot server (dual_actor/robots/franka_server.py; the adapter's
    keys are ``env.robot.*``, docs/real-robot.md)."""

    url: str = setting("http://127.0.0.1:5000/", "the robot server, http://HOST:PORT/ (Flask's port 5000)")


@dataclass
class LeRobotEnvConfig(EnvConfig):
    """Any robot of lerobot 0.4.4's ``Robot`` API (dual_actor/robots/lerobot_robot.py): ``env.robot.type`` names
    the lerobot robot config and ``env.robot.<field>`` sets its fields (``+env.robot.<field>`` for one the yaml
    does not list); ``env.robot.adapter.*`` are the adapter's keys (docs/real-robot.md)."""

    urdf_path: Optional[str] = setting(None, "the arm's URDF: actions are end-effector deltas turned into joint "
                                             "targets by lerobot's kinematics (null: joint deltas)")


ENV_SCHEMAS = {"metaworld_bench": MetaworldBenchConfig, "franka_server": FrankaServerEnvConfig,
               "lerobot_robot": LeRobotEnvConfig}
"""``conf/env`` options with keys of their own (schema ``schema/env/<name>``)."""


@dataclass
class SafetyConfig:
    """The one safety layer between the control loop and every robot, the bench's simulation included
    (dual_actor/runtime/safety.py; docs/real-robot.md). Null switches a check off; the bench keeps every limit off
    (its simulator bounds the hand itself) but the non-finite-action check and the watchdog."""

    workspace_min: Optional[List[float]] = setting(None, "[x, y, z] metres: the end effector's box, lower corner "
                                                         "(robot base frame); an action that would leave the box is "
                                                         "clipped to it (null: no box)")
    workspace_max: Optional[List[float]] = setting(None, "[x, y, z] metres: the box's upper corner")
    max_step_m: Optional[float] = setting(None, "largest translation one action may command, metres (the norm; "
                                                "longer ones are scaled down; null: the action's own bound)")
    max_step_rad: Optional[float] = setting(None, "largest rotation one action may command, radians (7-d actions)")
    joint_limits: Optional[List[List[float]]] = setting(None, "[[low, high], ...] per joint, the arm's units: joint "
                                                              "targets are clamped into them (arms whose adapter "
                                                              "commands joints)")
    timeout_s: float = setting(5.0, "watchdog: a robot or camera read slower than this holds the arm and ends the "
                                    "episode")
    on_exit: str = setting("hold", "what the robot does when the run exits, is interrupted or crashes: hold (keep "
                                   "its pose) | home (move to the env's home pose first); the connection is closed",
                           choices=("hold", "home"))

    def __post_init__(self) -> None:
        check_choices(self, "safety.")
        box = (self.workspace_min, self.workspace_max)
        if (box[0] is None) != (box[1] is None):
            raise ConfigError("safety.workspace_min and safety.workspace_max go together (both, or neither)")
        if box[0] is not None and (len(box[0]) != 3 or len(box[1]) != 3 or any(lo >= hi for lo, hi in zip(*box))):
            raise ConfigError(f"safety.workspace_min < safety.workspace_max, 3 values each, got {box[0]} / {box[1]}")
        for name in ("max_step_m", "max_step_rad", "timeout_s"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"safety.{name} must be > 0, got {v}")
        for i, lim in enumerate(self.joint_limits or []):
            if len(lim) != 2 or not lim[0] < lim[1]:
                raise ConfigError(f"safety.joint_limits[{i}] must be [low, high] with low < high, got {lim}")


@dataclass
class TrainerConfig:
    """``conf/trainer``: the Lightning Trainer and the run's logging cadence."""

    accelerator: str = setting("cpu", "Lightning accelerator")
    devices: Any = setting(1, "Lightning devices")
    precision: str = setting("32-true", "Lightning precision (bf16-mixed: matmuls / convs in bf16; weights, "
                                        "optimizer and losses stay fp32)")
    log_every: int = setting(50, "scalars to TensorBoard every this many updates", warmup=False)
    checkpoint_every: int = setting(1000, "atomic last.ckpt every this many updates", warmup=False)
    progress_bar: bool = setting(True, "progress bars", warmup=False)


@dataclass
class DataConfig:
    """The warm-up dataset."""

    path: str = setting("${run_root}/data/${env.name}_demos.hdf5", "warm-up HDF5 talk-and-tweak dataset")
    generate_if_missing: bool = setting(True, "sim envs only: record scripted-expert demos into data.path")
    split: Optional[str] = setting(None, "a /mask/<split> of the file (null: all episodes)")


@dataclass
class WarmupConfig:
    """Sharing the warm-up between runs (arms, ablations) that agree on everything it depends on."""

    share: bool = setting(False, "one warm-up per seed and warm-up config in ${run_root}/warmups/, reused by every "
                                 "run that shares it (e.g. algo=dual_actor, algo.refine_enabled=false and algo=dsrl "
                                 "do; dual_actor/training/warmup_cache.py)")


@dataclass
class OnlineConfig:
    """Phase II (Algorithm 1 lines 11-35)."""

    env_steps: int = setting(15000, "interaction budget, all tasks together (0: warm-up only); 15k = the paper's "
                                    "budget (25 min at 10 Hz): at 15k pick up and assemble were above the warm-up on "
                                    "3 of 3 seeds (docs/results.md)")
    updates_per_env_step: float = setting(1.0, "learner updates per interaction step")
    min_rollout: int = setting(100, "learning waits for this many rollouts per task (Alg. 1 line 13)")
    weight_sync_every: int = setting(10, "learner -> actor policy weights every N updates")
    max_episode_steps: int = setting(200, "episode time limit (the noisy expert needs up to ~130 on "
                                          "pick-out-of-hole)")
    period_s: Optional[float] = setting(None, "control period; null: as fast as possible (sim); 0.1 for a 10 Hz "
                                              "robot")
    window: int = setting(WINDOW, "talk-and-tweak J (Eq. 12)")
    sigma: float = setting(SIGMA_M, "talk-and-tweak threshold sigma (Eq. 13), metres")
    translation_scale_m: float = setting("${env.translation_scale_m}", "action units -> metres of the translational "
                                                                       "dims (the env's)")
    label: str = setting(DEFAULT_LABEL, "talk-and-tweak label source: correction (executed - the policy's proposal: "
                                       "which way the operator corrected it; 3 seeds per arm at 15k: weakest command "
                                       "0.30 -> 0.52 at the same success, docs/results.md) | action (Eq. 12 as "
                                       "printed: the executed actions)", choices=LABELS)
    log_teleop: bool = setting(True, "write the online teleop log under <run>/teleop/")
    wait_for_operator: bool = setting(False, "after each reset the robot holds until the operator resumes (pause): "
                                             "a person resets a real robot's scene (experiment=real)")
    seed: int = setting(1000, "env seeds of the online phase (demos use seed, evaluation eval.seed)")

    def __post_init__(self) -> None:
        check_choices(self, "online.")


@dataclass
class EvalConfig:
    """Evaluation trials (no interventions) and the learning curve."""

    trials: int = setting(25, "final evaluation, per task, no interventions")
    max_episode_steps: int = setting(200, "episode time limit of an evaluation trial")
    seed: int = setting(10000, "first evaluation seed: trial i of split dev has seed + 2 i, of split test "
                               "seed + 2 i + 1 (disjoint)")
    split: str = setting("test", "the trials of the final evaluation and of eval_warmup.json (test: what is "
                                 "reported; dev: to choose settings on); learning-curve points always use dev",
                         choices=("dev", "test"))
    curve_every_env_steps: int = setting(1500, "learning-curve points during the online phase")
    curve_trials: int = setting(10, "trials per task of a learning-curve point (0: no points: experiment=real)")
    warmup_point: bool = setting(True, "evaluate the warm-up policy on the final evaluation's trials "
                                       "(eval_warmup.json: the table shows warm-up -> final) and as the curve's "
                                       "first (dev) point")
    with_commands: bool = setting(False, "also evaluate with a simulated operator speaking refinement commands "
                                         "(eval_commands.json)")
    robot_b: bool = setting(False, "also evaluate on robot B (env.robot_shift) -> eval_B.json (multi-robot transfer, "
                                   "RQ5)")

    def __post_init__(self) -> None:
        check_choices(self, "eval.")


@dataclass
class RecordConfig:
    """``python -m dual_actor.record``: demos driven by the person, written as a teleop session."""

    episodes: int = setting(20, "episodes to record per task (the paper: 20)")
    tasks: Optional[List[str]] = setting(None, "the tasks to record, one after the other (null: env.tasks)")
    session: Optional[str] = setting(None, "the session folder under ${run_root}/recordings/ (null: a time stamp)")
    seed: int = setting(0, "the env seeds of the recording (a simulated robot's scenes)")
    policy: Optional[str] = setting(None, "a policy folder (``<run>/policy``) or Hub repo id that acts while the "
                                          "person watches, takes over and ends episodes: an evaluation on the robot "
                                          "(``<session>/eval.json``: success with and without take-overs), logged "
                                          "as online episodes (null: the person drives, demos)")


@dataclass
class CheckConfig:
    """``python -m dual_actor.check_robot``: connect, read, report, move nothing, disconnect."""

    reads: int = setting(20, "observations (and camera frames) read to measure the rates")
    task: Optional[str] = setting(None, "the task the env is built for (null: the first of env.tasks)")


@dataclass
class VLAConfig:
    """``python -m dual_actor.train_vla``: the bench VLA, lerobot 0.4.4's SmolVLA (its policy class and flow-matching
    loss) reduced to fit a CPU and trained from scratch on the bench's demos (rendered cameras, the task's instruction,
    proprioception; no object or goal position), saved as a lerobot policy folder (docs/vla.md)."""

    cameras: List[str] = setting(["corner", "gripperPOV"], "cameras rendered into the demos and fed to the VLA")
    data_path: str = setting("${run_root}/data/${env.name}_vla_demos.hdf5",
                             "the demos with images (the env's demo generator writes them when absent; "
                             "env.demos sets how many)")
    image_size: int = setting(96, "images resized (with padding) to H = W for the model (rendered at env.image_size)")
    patch_size: int = setting(16, "vision tower patch size; (image_size / patch_size)^2 / 4 tokens per image")
    vision_hidden: int = setting(128, "vision tower width")
    vision_layers: int = setting(4, "vision tower layers")
    vision_heads: int = setting(4, "vision tower attention heads")
    text_hidden: int = setting(256, "language model width (the action expert: 0.75 of it)")
    text_layers: int = setting(4, "language model layers (the action expert has as many)")
    text_heads: int = setting(4, "language model attention heads")
    kv_heads: int = setting(2, "language model key/value heads (h = 2 kv_heads head_dim: Eq. 17)")
    chunk_size: int = setting(10, "actions predicted per chunk")
    n_action_steps: int = setting(5, "actions of a chunk executed before the next is sampled (acting as a policy)")
    num_steps: int = setting(10, "flow-matching integration steps when sampling a chunk")
    steps: int = setting(5000, "training updates")
    batch_size: int = setting(32, "samples per update")
    lr: float = setting(1e-4, "peak learning rate (SmolVLA's preset: AdamW, cosine decay after a linear warm-up)")
    warmup_steps: int = setting(200, "linear learning-rate warm-up, updates")
    log_every: int = setting(100, "updates between loss lines (and TensorBoard points)")
    eval_trials: int = setting(25, "trials per task of the VLA acting alone at the end (eval.split's trials; 0: none)")

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "vision_hidden", "vision_layers", "vision_heads", "text_hidden",
                     "text_layers", "text_heads", "kv_heads", "chunk_size", "n_action_steps", "num_steps", "steps",
                     "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vla.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_trials < 0 or self.warmup_steps < 0 or self.lr <= 0:
            raise ConfigError("vla.eval_trials and vla.warmup_steps must be >= 0 and vla.lr > 0")
        if not self.cameras:
            raise ConfigError("vla.cameras: the bench VLA sees at least one camera")
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % 2:
            raise ConfigError(f"vla.image_size / vla.patch_size must be an even integer (SmolVLM merges 2 x 2 "
                              f"patches into a token), got {self.image_size} / {self.patch_size}")
        for width, heads, what in ((self.vision_hidden, self.vision_heads, "vision"),
                                   (self.text_hidden, self.text_heads, "text")):
            if width % heads:
                raise ConfigError(f"vla.{what}_hidden ({width}) must be a multiple of vla.{what}_heads ({heads})")
        if self.text_heads % self.kv_heads:
            raise ConfigError(f"vla.text_heads ({self.text_heads}) must be a multiple of vla.kv_heads ({self.kv_heads})")
        if self.n_action_steps > self.chunk_size:
            raise ConfigError(f"vla.n_action_steps ({self.n_action_steps}) <= vla.chunk_size ({self.chunk_size})")


@dataclass
class Config:
    """``python -m dual_actor.fit``: everything a run is built from."""

    env: EnvConfig = setting("???", "the world and the dataset's layout (conf/env)")
    backbone: Any = setting("???", "the frozen backbone giving h: state | smolvla | cls (conf/backbone)")
    text_encoder: Any = setting("???", "refinement-command encoder: learned | t5 | sentence (conf/text_encoder)")
    image_encoder: Any = setting("???", "critics' and refinement actor's observation encoder: state | h | resnet18 | "
                                        "resnet10 (conf/image_encoder; needs env.cameras)")
    algo: AlgoConfig = setting("???", "the learning algorithm (conf/algo)")
    trainer: TrainerConfig = setting(TrainerConfig(), "the Lightning Trainer (conf/trainer)")
    operator: Any = setting("???", "the human in the loop: simulated | spacemouse | keyboard | none (conf/operator)",
                            warmup=False)
    runtime: Any = setting("???", "robot loops <-> learner transport: inprocess | ray (conf/runtime)", warmup=False)
    run_name: str = setting("${now:%Y%m%d-%H%M%S}", "outputs in ${run_root}/${run_name}/", warmup=False)
    run_root: str = setting("checkpoints", "where run folders (and data/, warmups/) live", warmup=False)
    resume: bool = setting(False, "continue ${run_root}/${run_name}/last.ckpt", warmup=False)
    seed: int = setting(0, "seeds the learner, the demos and the simulated operator")
    data: DataConfig = setting(DataConfig(), "the warm-up dataset")
    safety: SafetyConfig = setting(SafetyConfig(), "the safety layer around every robot", warmup=False)
    record: RecordConfig = setting(RecordConfig(), "python -m dual_actor.record", warmup=False)
    check: CheckConfig = setting(CheckConfig(), "python -m dual_actor.check_robot", warmup=False)
    warmup: WarmupConfig = setting(WarmupConfig(), "sharing the warm-up between runs", warmup=False)
    online: OnlineConfig = setting(OnlineConfig(), "phase II on the robots", warmup=False)
    eval: EvalConfig = setting(EvalConfig(), "evaluation and the learning curve", warmup=False)
    vla: VLAConfig = setting(VLAConfig(), "python -m dual_actor.train_vla: the bench VLA", warmup=False)
    out: Optional[str] = setting(None, "python -m dual_actor.train_vla: the bench VLA's folder (null: "
                                       "${run_root}/vla)", warmup=False)
