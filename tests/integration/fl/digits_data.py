"""sklearn's digits split for the federated tests: a shared test set and non-IID client shares
(each client mostly two classes), and softmax regression in NumPy."""
import numpy as np
from sklearn.datasets import load_digits

_CACHE = {}


def _data():
    if "all" not in _CACHE:
        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order], y[order]
        cut = int(len(y) * 0.7)
        _CACHE["all"] = (x[:cut], y[:cut], x[cut:], y[cut:])
    return _CACHE["all"]


def test_set():
    _, _, x, y = _data()
    return x, y


def client_share(index, clients, seed=0, main_share=0.85):
    """Client `index` of `clients`: about 85% of its examples from its two classes, the rest from any."""
    x, y, _, _ = _data()
    rng = np.random.default_rng(100 + index + 7 * seed)
    mine = [(2 * index) % 10, (2 * index + 1) % 10]
    main = np.flatnonzero(np.isin(y, mine))
    others = np.flatnonzero(~np.isin(y, mine))
    extra = rng.choice(others, size=int(len(main) * (1 - main_share) / main_share), replace=False)
    chosen = np.concatenate([main, extra])
    rng.shuffle(chosen)
    return x[chosen], y[chosen]


def softmax_init(seed=1234, features=64, classes=10):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((features, classes)) * 0.01).astype(np.float32), np.zeros(classes, dtype=np.float32)]


def _probabilities(w, b, x):
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def softmax_train(parameters, x, y, epochs, lr, batch_size, seed, proximal_mu=0.0):
    w, b = (p.astype(np.float32).copy() for p in parameters)
    w0, b0 = w.copy(), b.copy()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            p = _probabilities(w, b, x[idx])
            p[np.arange(len(idx)), y[idx]] -= 1.0
            grad_w = x[idx].T @ p / len(idx)
            grad_b = p.mean(axis=0)
            if proximal_mu:
                grad_w += proximal_mu * (w - w0)
                grad_b += proximal_mu * (b - b0)
            w -= (lr * grad_w).astype(np.float32)
            b -= (lr * grad_b).astype(np.float32)
    return [w, b]


def softmax_eval(parameters, x, y):
    w, b = parameters
    p = _probabilities(w.astype(np.float64), b.astype(np.float64), x.astype(np.float64))
    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()
    return float(loss), float((p.argmax(axis=1) == y).mean())


def dirichlet_share(index, clients, alpha=0.5, seed=0):
    """Client `index` of `clients` under a Dirichlet(alpha) label skew: each class's training
    examples are split over the clients in proportions drawn from Dirichlet(alpha)."""
    x, y, _, _ = _data()
    rng = np.random.default_rng(seed)
    mine = []
    for label in range(10):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(members)).astype(int)[:-1]
        mine.append(np.split(members, cuts)[index])
    chosen = np.concatenate(mine)
    if len(chosen) == 0:  # a client with no data would fail every fit; give it one example
        chosen = np.array([index])
    rng.shuffle(chosen)
    return x[chosen], y[chosen]
