

@pytest.mark.parametrize("body", ["s = slice(W @ s[t-1], X, H + X)", "s = slice(concat(s[t-1], x), 0, H)",
                                  "s = slice(1 - tanh(W @ s[t-1]), X, H + X)"])
def test_a_state_that_is_a_slice(body):
    """A state assigned a slice of a wider core value failed in the backward loop with a
    NameError: the slice's gradient was a call handed forward values the loop had not loaded,
    though the rule reads none."""
    text = (f"cell C(x : [X]) -> s : [H] {{\n    param W : [H + X, H]\n    state s : [H] = 0.5\n    {body}\n}}\n"
            "model M {\n    input x : seq[float, 4]\n    target y : [3]\n    loss = mse(last(C(x, 3)), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    assert check_model(net, inputs, lengths).ok(1e-6)
