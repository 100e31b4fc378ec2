"""The options of the config groups whose choices have different keys: ``backbone/``, ``text_encoder/``,
``image_encoder/``, ``operator/``, ``runtime/`` (one dataclass per option, one declaration per key).

Each ``conf/<group>/<option>.yaml`` names its schema in its defaults list and sets only what differs from it
(or links a value defined elsewhere with ``${...}``). The operator schemas' defaults are the operator classes'
own (tests/test_wiring.py compares them).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from dual_actor.config.fields import check_choices, setting

STATE_KEYS = ("proprio", "state")
DEVICE_HELP = "where it runs (null: cuda if available, else cpu)"
DTYPE_HELP = "its dtype (null: bfloat16 on cuda, float32 on cpu)"


# ------------------------------------------------------------------------------------------- backbone/
@dataclass
class StateBackbone:
    """h = [state, one_hot(task)]: the CPU / simulation default (no VLA)."""

    name: str = setting("state", "backbone kind")


@dataclass
class SmolVLABackbone:
    """Frozen SmolVLA (lerobot 0.4.4): h = Eq. 17 mask-pooled last-VLM-layer K, V (2*H*D; 640 for SmolVLA-500M).
    Needs camera images (env.cameras). Its weights are never saved with the policy: it is rebuilt from
    ``checkpoint``."""

    name: str = setting("smolvla", "backbone kind")
    checkpoint: str = setting("???", "local folder in the lerobot/smolvla_base layout, or a Hub id")
    camera_map: Any = setting(None, "{env camera: SmolVLA image feature}, e.g. {corner: camera1}; null: match by "
                                    "name (a mapping; typed Any: OmegaConf cannot merge an override into a null "
                                    "typed mapping)")
    allow_missing_cameras: bool = setting(False, "run with fewer cameras than the checkpoint's image features")
    state_key: str = setting("proprio", "observation vector given as SmolVLA's observation.state", choices=STATE_KEYS)
    device: Optional[str] = setting(None, DEVICE_HELP)
    dtype: Optional[str] = setting(None, DTYPE_HELP)
    vlm_model_name: Optional[str] = setting(None, "override the SmolVLM folder / id named in the checkpoint's config")
    strict: bool = setting(True, "missing / unexpected weight keys are an error (shape mismatches always are)")
    layer: int = setting(-1, "the VLM layer whose K, V are pooled (-1: the last, Eq. 17)")
    pool: str = setting("prefix", "prefix (every real prefix token, Eq. 17) | images (the cameras' tokens only)",
                        choices=("prefix", "images"))

    def __post_init__(self) -> None:
        check_choices(self, "backbone.")


@dataclass
class ClsBackbone:
    """Any frozen torch model whose CLS / readout token is h (the Octo route), built by Hydra from ``model``
    and read through ``adapter`` (dual_actor/nets/backbones/cls.py). ``model`` must rebuild the same weights
    (a loader of a checkpoint, or a seeded builder): the model is never saved with the policy."""

    name: str = setting("cls", "backbone kind")
    model: Any = setting({"_target_": "???"}, "the model: a Hydra _target_ mapping, e.g. "
                                              "backbone.model._target_=my_pkg.load_octo +backbone.model.path=/ckpt")
    adapter: Any = setting({"_target_": "dual_actor.nets.backbones.FirstTokenAdapter", "embedding_dim": "???"},
                           "reads h from the model's output (a Hydra _target_ mapping; embedding_dim: D of the token)")
    embedding_dim: Optional[int] = setting(None, "h's width (null: the adapter's)")
    state_key: str = setting("proprio", "observation vector given to the model as its state", choices=STATE_KEYS)
    device: Optional[str] = setting(None, DEVICE_HELP)
    dtype: Optional[str] = setting(None, DTYPE_HELP)

    def __post_init__(self) -> None:
        check_choices(self, "backbone.")


# --------------------------------------------------------------------------------------- text_encoder/
@dataclass
class LearnedTextEncoder:
    """Refinement-command encoder: one trainable embedding row per command (the offline default)."""

    kind: str = setting("learned", "command encoder kind")
    out_dim: int = setting(64, "embedding width")


@dataclass
class PretrainedTextEncoder:
    """A frozen language model, mean-pooled; every command is embedded once into a table (saved with the
    policy, which then reloads without the model). ``t5``: a T5 encoder; ``sentence``: a BERT-style sentence
    encoder (e.g. all-MiniLM-L6-v2), L2-normalised."""

    kind: str = setting("t5", "t5 | sentence", choices=("t5", "sentence"))
    path: str = setting("???", "local folder (save_pretrained layout) or a Hub id such as google-t5/t5-small")
    batch_size: int = setting(64, "commands per forward pass while the table is built")
    max_length: int = setting(128, "tokenizer truncation length")
    device: Optional[str] = setting(None, "where the model runs while the table is built (null: cpu)")

    def __post_init__(self) -> None:
        check_choices(self, "text_encoder.")


@dataclass
class SentenceTextEncoder(PretrainedTextEncoder):
    kind: str = setting("sentence", "t5 | sentence", choices=("t5", "sentence"))
    normalize: bool = setting(True, "L2-normalise the pooled embedding")


# -------------------------------------------------------------------------------------- image_encoder/
@dataclass
class StateImageEncoder:
    """The critics' and refinement actor's observation encoder over the state vector (no images): the default."""

    kind: str = setting("state", "observation encoder kind")


@dataclass
class HImageEncoder:
    """The critics' and refinement actor's observation encoder over [h, state]: the frozen backbone's h (a VLA's view
    of the cameras and the instruction, ``backbone=smolvla``), computed once per frame on the robot side and stored
    with each transition, so the learner never runs the backbone (docs/vla.md)."""

    kind: str = setting("h", "observation encoder kind")


@dataclass
class ResNetImageEncoder:
    """The critics' and refinement actor's observation encoder: a ResNet per camera (env.cameras) + the state
    vector (dual_actor/nets/image.py MultiCameraEncoder). Needs env.cameras."""

    kind: str = setting("resnet18", "resnet18 | resnet10", choices=("resnet18", "resnet10"))
    weights_path: Optional[str] = setting(None, "torchvision-layout state_dict (.pth / .safetensors), e.g. ImageNet; "
                                                "null: random init")
    freeze: bool = setting(False, "freeze the trunk (the pooling heads stay trainable)")
    pooling: str = setting("spatial", "spatial (HIL-SERL spatial embeddings; tied to env.image_size) | avg",
                           choices=("spatial", "avg"))
    shared: bool = setting(True, "one trunk for all cameras of an encoder")
    camera_dim: int = setting(256, "per-camera feature width")
    state_feature_dim: int = setting(64, "width of the state branch")
    num_spatial_features: int = setting(8, "spatial-embedding features per camera")
    dropout: float = setting(0.1, "dropout in the pooling heads")

    def __post_init__(self) -> None:
        check_choices(self, "image_encoder.")


# ------------------------------------------------------------------------------------------- operator/
@dataclass
class NoOperator:
    """No human in the loop (pure RL online phase)."""


@dataclass
class SimulatedOperatorConfig:
    """A simulated human: the scripted expert watches the rollout, speaks a refinement command first and takes
    over (with noise, after a reaction delay) only if speaking did not help (docs/operators.md). One per task."""

    _target_: str = "dual_actor.runtime.operators.SimulatedOperator"
    expert: str = setting("corrected", "the scripted expert it acts / speaks with: corrected (Metaworld's, with its "
                                       "assemble-the-bolt loop fixed: 23/25 vs 21/25 on the test trials; "
                                       "docs/operators.md) | metaworld (as shipped)", choices=("corrected", "metaworld"))
    expert_noise: float = setting(0.1, "std of the noise on its corrective actions")
    reaction_delay: int = setting(2, "steps between a trigger and the take-over")
    disagree_threshold: float = setting(0.5, "|policy - expert| (xyz) that counts as disagreement")
    patience: int = setting(3, "consecutive disagreeing steps that trigger a correction")
    correction_steps: int = setting(10, "steps of a correction segment")
    no_progress_steps: int = setting(30, "steps without hand progress that trigger a correction")
    speak_commands: bool = setting(False, "only speak, never take over (evaluation with spoken commands)")
    talk_then_tweak: bool = setting(True, "speak a refinement command first, take over only if that did not help "
                                          "(the paper's online loop); false: take over at once")
    escalate_window: int = setting(20, "steps after a spoken segment within which a new trigger takes over")
    command_window: int = setting("${online.window}", "talk-and-tweak J of its spoken commands")
    sigma: float = setting("${online.sigma}", "talk-and-tweak threshold of its spoken commands, metres")
    translation_scale_m: float = setting("${online.translation_scale_m}", "action units -> metres")
    seed: int = setting("${seed}", "seeds its correction noise")

    def __post_init__(self) -> None:
        check_choices(self, "operator.")


@dataclass
class _DeviceOperatorConfig:
    action_dim: int = setting("${env.action_dim}", "the robot's action size")
    translation_scale: float = setting(1.0, "device units -> action units, translation")


@dataclass
class KeyboardOperatorConfig(_DeviceOperatorConfig):
    """Keyboard teleoperation in the terminal (w/s a/d r/f move, space gripper, i latch, 1-6 commands)."""

    _target_: str = "dual_actor.runtime.operators.KeyboardOperator"


@dataclass
class SpaceMouseOperatorConfig(_DeviceOperatorConfig):
    """A 3Dconnexion SpaceMouse through pyspacemouse (docs/operators.md): intervening while the puck is displaced
    or a button is held; button 0 closes, button 1 opens the gripper."""

    _target_: str = "dual_actor.runtime.operators.SpaceMouseOperator"
    rotation_scale: float = setting(1.0, "device units -> action units, rotation")
    deadzone: float = setting(0.05, "puck displacement below which it does not intervene")
    close_button: int = setting(0, "button that closes the gripper")
    open_button: int = setting(1, "button that opens the gripper")
    estop_buttons: List[int] = setting([0, 1], "buttons that, pressed together, toggle the e-stop")
    event_buttons: Dict[int, str] = setting({}, "button -> success | failure | rerecord | pause, for devices with "
                                                "spare buttons (e.g. {2: success, 3: failure})")
    event_keys: Dict[str, str] = setting({"g": "success", "b": "failure", "n": "rerecord", "p": "pause",
                                          "k": "estop"}, "terminal key -> episode event or estop, typed beside the "
                                                         "puck ({}: off)")
    command_keys: Dict[str, str] = setting({"1": "move left", "2": "move right", "3": "move forward",
                                            "4": "move backward", "5": "move up", "6": "move down"},
                                           "terminal key -> spoken refinement command, held 5 steps (0 ends it; "
                                           "{}: off)")


# -------------------------------------------------------------------------------------------- runtime/
@dataclass
class InProcessRuntime:
    """Every robot loop, the learner and the evaluation in one Python process (the default;
    dual_actor/runtime/transport.py)."""

    name: str = setting("inprocess", "runtime kind")
    transport: Any = setting({"_target_": "dual_actor.runtime.transport.InProcessTransport"},
                             "how episodes and weights travel (a Hydra _target_)")
    robots: int = setting(1, "robots whose loops run round-robin in this process (robots 1, 3, ...: robot B, "
                             "env.robot_shift)")


@dataclass
class RayRuntime:
    """One learner (this process) and one Ray actor per robot; robots 1, 3, ... are robot B (env.robot_shift)
    (dual_actor/data/ray_interaction.py, dual_actor/runtime/ray_robot.py, docs/multi-robot.md)."""

    name: str = setting("ray", "runtime kind")
    robots: int = setting(2, "robot actors (A, B, A2, B2, ...)")
    max_weight_age: int = setting(2000, "a robot holds (zero motion) once its weights are older than this many "
                                        "learner updates")
    age_check_every: int = setting(10, "robot steps between mid-episode weight-age checks")
    max_restarts: int = setting(5, "Ray restarts a crashed / killed robot process this often")
    timeout_s: float = setting(10.0, "a robot that cannot reach the learner for this long holds")
    max_updates_ahead: int = setting(200, "the learner may run this many updates ahead of "
                                          "online.updates_per_env_step x env steps")
    max_steps_ahead: Optional[int] = setting(None, "robots wait between episodes once this many env steps ahead of "
                                                   "the learner (null: never; real robots run on)")
    num_cpus: Optional[int] = setting(None, "Ray's CPU count when it starts locally (null: all cores)")
    object_store_mb: int = setting(256, "Ray object store when it starts locally (weights, in-flight episodes)")
    address: Optional[str] = setting(None, "an existing Ray cluster, HOST:PORT (null: start one in this process); "
                                           "across hosts it must require Ray's token authentication (docs/real-robot.md)")
    require_auth: bool = setting(True, "with an address: refuse to connect unless this process holds Ray's token "
                                       "(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), the one the "
                                       "cluster was started with")
    robot_resources: Any = setting(None, "Ray resources a robot actor needs, e.g. {robot: 1}: it then runs on the "
                                         "node started with them (the robot computer: ray start --resources "
                                         "'{\"robot\": 1}'); null: anywhere")
    journal: bool = setting(True, "every ingested episode is written to <run>/journal/ before it counts (kill -9 + "
                                  "resume loses none)")


# The schema of each option file: ConfigStore name (group "schema/<group>") -> dataclass.
GROUP_SCHEMAS = {
    "backbone": {"state": StateBackbone, "smolvla": SmolVLABackbone, "cls": ClsBackbone},
    "text_encoder": {"learned": LearnedTextEncoder, "pretrained": PretrainedTextEncoder,
                     "sentence": SentenceTextEncoder},
    "image_encoder": {"state": StateImageEncoder, "h": HImageEncoder, "resnet": ResNetImageEncoder},
    "operator": {"none": NoOperator, "simulated": SimulatedOperatorConfig, "keyboard": KeyboardOperatorConfig,
                 "spacemouse": SpaceMouseOperatorConfig},
    "runtime": {"inprocess": InProcessRuntime, "ray": RayRuntime},
}
