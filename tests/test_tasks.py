"""The task registry and the tasks' own decisions (`tf_recurrent_seg.tasks`); the loop that uses them is tested in
test_training.py, their exports in test_export.py."""

import pytest
from absl import flags

from tf_recurrent_seg import allocator, defaults, optimization
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.export import CLASS_NAMES_SIGNATURE, SERVING_SIGNATURE, TENSORS_SIGNATURE, WORD_OUTPUTS_SIGNATURE
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.tasks import TASKS, HumanParsingTask, ParsingTask, ReferringTask, get_task, model_names


def test_one_registry_names_every_model():
    assert TASKS == {
        "rmi": ReferringTask,
        "lstm": ReferringTask,
        "lg_lstm": ParsingTask,
        "conv_baseline": ParsingTask,
        "cocnn": HumanParsingTask,
        "lg_lstm_cocnn": HumanParsingTask,
    }
    assert model_names("referring") == ("rmi", "lstm")
    assert model_names("parsing") == ("lg_lstm", "conv_baseline", "cocnn", "lg_lstm_cocnn")
    assert defaults.is_referring(referring_config("lstm")) and not defaults.is_referring(parsing_config())
    with pytest.raises(ValueError, match=r"^model must be 'rmi' or 'lstm', got 'lg_lstm'$"):
        referring_config("lg_lstm")


def test_unknown_model_names_are_one_line_errors():
    config = shrink_config(parsing_config("lg_lstm"))
    config.model.name = "unet"
    for call in (get_task, build_model):
        with pytest.raises(ValueError) as raised:
            call(config)
        assert str(raised.value) == (
            "config.model.name must be one of ['cocnn', 'conv_baseline', 'lg_lstm', 'lg_lstm_cocnn', 'lstm', 'rmi'], "
            "got 'unet'"
        )
    with pytest.raises(ValueError, match="ParsingTask takes config.model.name in"):
        ParsingTask(shrink_config(referring_config("rmi")))


def test_signature_names_follow_the_model():
    assert get_task(referring_config("rmi")).signature_names() == [
        SERVING_SIGNATURE,
        TENSORS_SIGNATURE,
        WORD_OUTPUTS_SIGNATURE,
    ]
    assert get_task(referring_config("lstm")).signature_names() == [SERVING_SIGNATURE, TENSORS_SIGNATURE]
    assert get_task(parsing_config("conv_baseline")).signature_names() == [
        SERVING_SIGNATURE,
        TENSORS_SIGNATURE,
        CLASS_NAMES_SIGNATURE,
    ]


def test_settings_checks_of_each_family():
    parsing = shrink_config(parsing_config("lg_lstm"))
    parsing.train.cache_features = True
    with pytest.raises(ValueError, match=r"^train.cache_features applies to referring models \(rmi, lstm\) only$"):
        get_task(parsing).check_settings(num_replicas=1)
    referring = shrink_config(referring_config("rmi"))
    referring.train.cache_features = True
    get_task(referring).check_settings(num_replicas=1)  # a frozen backbone: fine
    referring.model.backbone.trainable = True
    with pytest.raises(ValueError, match="needs a frozen backbone"):
        get_task(referring).check_settings(num_replicas=1)
    referring = shrink_config(referring_config("rmi"))
    referring.train.batch_size = 3
    with pytest.raises(ValueError, match=r"train.batch_size \(3\) must be a multiple of the 2 replicas"):
        get_task(referring).check_settings(num_replicas=2)


def test_parsing_optimizer_gives_a_pretrained_backbone_its_own_rate():
    config = shrink_config(parsing_config("lg_lstm"))  # the backbone from scratch: one rate for every variable
    task = get_task(config)
    model = task.build_model()
    optimizer = task.build_optimizer(model)
    optimizer.build(model.trainable_variables)
    assert isinstance(optimizer, optimization.PretrainedScaledSGD)
    assert not any(optimizer.is_pretrained(variable) for variable in model.trainable_variables)
    config.model.backbone.pretrained = "imagenet"  # (not loaded here)
    optimizer = get_task(config).build_optimizer(model)
    optimizer.build(model.trainable_variables)
    assert optimizer.pretrained_learning_rate_multiplier == pytest.approx(0.1)  # 1e-4 against 1e-3
    backbone = {id(variable) for variable in model.backbone.trainable_variables}
    for variable in model.trainable_variables:
        assert optimizer.is_pretrained(variable) == (id(variable) in backbone), variable.path


def test_export_inputs(tmp_path):
    assert get_task(parsing_config()).export_inputs(str(tmp_path), "ignored.txt") == {}
    config = referring_config("rmi")
    config.data.vocabulary = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="pass --vocabulary"):
        get_task(config).export_inputs(str(tmp_path))
    (tmp_path / "vocabulary.txt").write_text("<pad>\n")  # the run's copy
    assert get_task(config).export_inputs(str(tmp_path)) == {"vocabulary": str(tmp_path / "vocabulary.txt")}
    assert get_task(config).export_inputs(str(tmp_path), "given.txt") == {"vocabulary": "given.txt"}


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_training_commands_keep_large_allocations_after_the_input_starts(monkeypatch, command):
    """The library trains without touching malloc; the commands pass `allocator.keep_large_allocations`, which
    the loop calls once its input pipelines have started (after tf.data's own malloc change)."""
    from tf_recurrent_seg import pretraining, training
    from tf_recurrent_seg.cli import pretrain as pretrain_cli
    from tf_recurrent_seg.cli import train as train_cli

    calls = []
    module, cli = (training, train_cli) if command == "train" else (pretraining, pretrain_cli)
    monkeypatch.setattr(module, command, lambda *args, **kwargs: calls.append(kwargs) or {})
    flag_values = flags.FlagValues()
    cli.define_flags(flag_values)
    config = "configs/rmi_synthetic.py" if command == "train" else "configs/backbone_synthetic.py"
    flag_values(["program", f"--config={config}", "--workdir=/tmp/unused"])
    cli.main(["program"], flag_values)
    assert calls == [{"after_input_built": allocator.keep_large_allocations}]
