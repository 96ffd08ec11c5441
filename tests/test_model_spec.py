"""The spec grammar: valid specs, Keras names, and one-line MlplabErrors for malformed ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlplab.errors import MlplabError
from mlplab.model import ACTIVATIONS, LayerSpec, parse_spec
from mlplab.model.spec import canonical, layer_names

NOTEBOOK = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"


def test_notebook_spec():
    layers = parse_spec(NOTEBOOK)
    assert layers == [LayerSpec("dense", 512, "relu"), LayerSpec("dropout", rate=0.2),
                      LayerSpec("dense", 512, "relu"), LayerSpec("dropout", rate=0.2),
                      LayerSpec("dense", 10, "softmax")]
    assert layer_names(layers) == ["dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3"]
    assert canonical(layers) == NOTEBOOK


def test_whitespace_and_case_tolerant():
    assert canonical(parse_spec("  512 : ReLU ,\tDropout: .2 ,\n10:SOFTMAX ")) == "512:relu,dropout:0.2,10:softmax"


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_parses_even_hidden_softmax(act):
    assert parse_spec(f"3:{act},2:{act}")[0].activation == act


def test_rate_forms():
    assert [s.rate for s in parse_spec("4:relu,dropout:0,4:relu,dropout:2e-1,4:relu,dropout:0.999,1:linear")
            if s.kind == "dropout"] == [0.0, 0.2, 0.999]


def test_list_of_layerspecs_is_accepted():
    layers = parse_spec(NOTEBOOK)
    assert parse_spec(layers) == layers


@pytest.mark.parametrize("spec, message", [
    ("512:relux,10:softmax",
     "bad model spec: layer 1 '512:relux' (at character 1): unknown activation 'relux'; allowed: relu, softplus, "
     "sigmoid, tanh, softmax, linear, gelu, leaky_relu"),
    ("512:relu,dropout:1.5,10:softmax",
     "bad model spec: layer 2 'dropout:1.5' (at character 10): dropout rate 1.5 is out of range; allowed: "
     "0 <= rate < 1"),
    ("512:relu,dropout:1,10:softmax",
     "bad model spec: layer 2 'dropout:1' (at character 10): dropout rate 1 is out of range; allowed: 0 <= rate < 1"),
    ("512:relu,dropout:-0.1,10:softmax",
     "bad model spec: layer 2 'dropout:-0.1' (at character 10): dropout rate '-0.1' is not a number; allowed: "
     "0 <= rate < 1"),
    ("512:relu,dropout:nan,10:softmax",
     "bad model spec: layer 2 'dropout:nan' (at character 10): dropout rate 'nan' is not a number; allowed: "
     "0 <= rate < 1"),
    ("0:relu,10:softmax",
     "bad model spec: layer 1 '0:relu' (at character 1): 0 units is out of range; allowed: 1 to 1,000,000"),
    ("", "bad model spec: it is empty; expected comma-separated layers like "
         "'512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax'"),
    ("   ", "bad model spec: it is empty; expected comma-separated layers like "
            "'512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax'"),
    ("512:relu,,10:softmax",
     "bad model spec: layer 2 (at character 10) is empty (a doubled or trailing comma?); expected N:ACTIVATION or "
     "dropout:RATE, e.g. '512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax'"),
    ("512:relu,10:softmax,",
     "bad model spec: layer 3 (at character 21) is empty (a doubled or trailing comma?); expected N:ACTIVATION or "
     "dropout:RATE, e.g. '512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax'"),
    ("512",
     "bad model spec: layer 1 '512' (at character 1): expected N:ACTIVATION (e.g. 512:relu) or dropout:RATE "
     "(e.g. dropout:0.2)"),
    ("512:relu:3",
     "bad model spec: layer 1 '512:relu:3' (at character 1): expected N:ACTIVATION (e.g. 512:relu) or dropout:RATE "
     "(e.g. dropout:0.2)"),
    ("abc:relu",
     "bad model spec: layer 1 'abc:relu' (at character 1): 'abc' is neither a number of units (a whole number >= 1) "
     "nor 'dropout'"),
    ("12.5:relu",
     "bad model spec: layer 1 '12.5:relu' (at character 1): '12.5' is neither a number of units (a whole number "
     ">= 1) nor 'dropout'"),
    ("2000000:relu,1:linear",
     "bad model spec: layer 1 '2000000:relu' (at character 1): 2000000 units is out of range; allowed: 1 to "
     "1,000,000"),
    ("dropout:0.2,dropout:0.1,10:softmax",
     "bad model spec: layer 2 'dropout:0.1' (at character 13): two dropout layers in a row; use one dropout with "
     "the combined rate"),
    ("512:relu,dropout:0.2",
     "bad model spec: layer 2 'dropout:0.2' (at character 10): the last layer must be dense (the output layer, "
     "e.g. 10:softmax)"),
    ("512:relu,dropout:0.2,dropout:0.3,10:softmax",
     "bad model spec: layer 3 'dropout:0.3' (at character 22): two dropout layers in a row; use one dropout with "
     "the combined rate"),
    (None, "bad model spec: expected a string like '512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax', got "
           "NoneType"),
])
def test_malformed_specs_have_one_line_messages(spec, message):
    with pytest.raises(MlplabError) as info:
        parse_spec(spec)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_column_counts_leading_spaces():
    with pytest.raises(MlplabError, match=r"layer 2 '8:foo' \(at character 10\)"):
        parse_spec("4:relu,  8:foo")


_ALPHABET = st.sampled_from(list("0123456789.:,- eE+_\t\nabcdloprusxz") + ["relu", "dropout", "softmax", "\u0663"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=20).map("".join)))
def test_fuzz_only_mlplab_error(text):
    try:
        layers = parse_spec(text)
    except MlplabError as err:
        assert "\n" not in str(err) and str(err).startswith("bad model spec:")
    else:
        # whatever parses round-trips through the canonical form
        assert parse_spec(canonical(layers)) == layers
        assert layers[0].kind == layers[-1].kind == "dense"


def test_dropout_may_come_first_as_keras_allows():
    layers = parse_spec("dropout:0.1,512:relu,dropout:0.2,10:softmax")
    assert layers[0] == LayerSpec("dropout", rate=0.1)
    assert layer_names(layers) == ["dropout_1", "dense_1", "dropout_2", "dense_2"]
    assert canonical(layers) == "dropout:0.1,512:relu,dropout:0.2,10:softmax"
