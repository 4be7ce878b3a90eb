"""The card-number detector's two rates, and the evidence behind its rule for numbers glued to letters
(docs/security.md quotes this output):

    PYTHONPATH=src .venv/bin/python bench/pan_rates.py [--ids 300000] [--seed 18]

- false positives: the share of seeded random numeric ids of 13 to 19 digits that is refused, overall
  and per length, beside what the network table implies and what the rule before it refused;
- detection: the share of published test cards, and of generated cards of every network in the
  table, that is detected;
- glue: for id shapes a merchant sends and for card numbers glued to letters, the share each of three
  rules would refuse: "never glued" (letters on either side make it an id), "one side" (the rule
  payorch uses: letters on both sides make it an id), "always" (letters never matter);
- other text: the share of some other values with many digits that the detector refuses (phone
  numbers in E.164 with and without their "+", UUIDs, timestamps, addresses, lists of amounts).

Prints JSON.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import ipaddress
import json
import random
import re
import statistics
import string
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pan_samples import PUBLISHED_TEST_CARDS, every_network_cards, network_card, old_rule, random_numeric_ids

from payorch.security.card_networks import MAX_LENGTH, MIN_LENGTH, NETWORKS, issued_share
from payorch.security.pan import contains_pan, is_card_number

_DIGIT_RUN = re.compile(r"[0-9]+")
_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"
_BASE62 = string.digits + string.ascii_letters


def false_positives(ids: list[str]) -> dict[str, object]:
    by_length: dict[int, list[bool]] = {}
    for number in ids:
        by_length.setdefault(len(number), []).append(contains_pan(number))
    refused = sum(sum(flags) for flags in by_length.values()) / len(ids)
    implied = statistics.fmean(issued_share(length) for length in range(MIN_LENGTH, MAX_LENGTH + 1)) / 10
    return {
        "ids": len(ids),
        "refused_share": round(refused, 5),
        "implied_by_table": round(implied, 5),
        "refused_by_the_rule_before": round(sum(map(old_rule, ids)) / len(ids), 5),
        "refused_share_by_length": {
            length: round(sum(flags) / len(flags), 5) for length, flags in sorted(by_length.items())
        },
    }


def detection(seed: int) -> dict[str, object]:
    generated = every_network_cards(seed, per_network=1000)
    return {
        "published_test_cards": len(PUBLISHED_TEST_CARDS),
        "published_detected": sum(is_card_number(number) for number, _, _ in PUBLISHED_TEST_CARDS),
        "networks": len(NETWORKS),
        "generated_cards": len(generated),
        "generated_detected": sum(contains_pan(card) for _, card in generated),
    }


def glue_verdicts(token: str) -> dict[str, bool]:
    """Which rule would take ``token`` (an id or a glued card) for a card number."""
    verdict = {"never_glued": False, "one_side": False, "always": False}
    for match in _DIGIT_RUN.finditer(token):
        if not is_card_number(match.group()):
            continue
        left = match.start() > 0 and token[match.start() - 1].isalpha()
        right = match.end() < len(token) and token[match.end()].isalpha()
        verdict["always"] = True
        verdict["one_side"] |= not (left and right)
        verdict["never_glued"] |= not (left or right)
    return verdict


def glue_corpora(rng: random.Random) -> dict[str, Callable[[], str]]:
    def digits(count: int) -> str:
        return str(rng.randrange(10 ** (count - 1), 10**count))

    def card() -> str:
        return network_card(rng, rng.choice(NETWORKS))

    return {
        "sha256 hex digest": lambda: hashlib.sha256(rng.randbytes(16)).hexdigest(),
        "sha1 hex digest": lambda: hashlib.sha1(rng.randbytes(16)).hexdigest(),  # noqa: S324 - sample data
        "uuid4 hex, no dashes": lambda: uuid.UUID(bytes=rng.randbytes(16), version=4).hex,
        "ULID-style id (ch_ + 26 base32)": lambda: "ch_" + "".join(rng.choice(_BASE32) for _ in range(26)),
        "Stripe-style id (pi_ + 24 base62)": lambda: "pi_" + "".join(rng.choice(_BASE62) for _ in range(24)),
        "base64url token (32 bytes)": lambda: base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("="),
        "ORD + 13-19 digit id": lambda: "ORD" + digits(rng.randint(13, 19)),
        "bare 13-19 digit id": lambda: digits(rng.randint(13, 19)),
        "card glued left (card4242...)": lambda: rng.choice(["card", "cc", "pan", "Visa", "x"]) + card(),
        "card glued right (4242...exp)": lambda: card() + rng.choice(["exp", "x", "cvv", "A"]),
        "card glued both sides (cc4242...exp)": lambda: (
            rng.choice(["cc", "x", "pan"]) + card() + rng.choice(["exp", "A"])
        ),
    }


def glue(seed: int, samples: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    report: dict[str, dict[str, float]] = {}
    for name, make in glue_corpora(rng).items():
        counts = {"never_glued": 0, "one_side": 0, "always": 0}
        for _ in range(samples):
            for rule, taken in glue_verdicts(make()).items():
                counts[rule] += taken
        report[name] = {rule: round(count / samples, 5) for rule, count in counts.items()}
    return report


def other_text(seed: int, samples: int) -> dict[str, float]:
    rng = random.Random(seed)

    def phone(plus: str) -> str:
        # Mobile numbers of Brazil, Indonesia, Germany, China and Nigeria: 13 digits with the country code.
        country, groups = rng.choice(
            [("55", (2, 5, 4)), ("62", (3, 4, 4)), ("49", (3, 8)), ("86", (3, 4, 4)), ("234", (3, 3, 4))]
        )
        return plus + country + "".join(" " + str(rng.randrange(10 ** (g - 1), 10**g)) for g in groups)

    def moment() -> dt.datetime:
        return dt.datetime(2020, 1, 1) + dt.timedelta(
            seconds=rng.randrange(300_000_000), microseconds=rng.randrange(10**6)
        )

    shapes: dict[str, Callable[[], str]] = {
        "mobile number, E.164 (+55 11 91234 5678)": lambda: phone("+"),
        "mobile number, E.164 without its + (55 11 91234 5678)": lambda: phone(""),
        "uuid4": lambda: str(uuid.UUID(bytes=rng.randbytes(16), version=4)),
        "ISO 8601 timestamp (2024-01-15T12:30:45.123456Z)": lambda: moment().isoformat() + "Z",
        "Python str(datetime) (2024-01-15 12:30:45.123456)": lambda: str(moment()),
        "IPv6 address, exploded": lambda: ipaddress.IPv6Address(rng.randbytes(16)).exploded,
        "list of 3-6 amounts (1050, 2000, 3050)": lambda: ", ".join(
            str(rng.randint(100, 9999)) for _ in range(rng.randint(3, 6))
        ),
    }
    return {
        name: round(sum(contains_pan(make()) for _ in range(samples)) / samples, 5) for name, make in shapes.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--glue-samples", type=int, default=100_000)
    args = parser.parse_args()
    report = {
        "seed": args.seed,
        "false_positives": false_positives(random_numeric_ids(args.seed, args.ids)),
        "detection": detection(args.seed),
        "glue": glue(args.seed, args.glue_samples),
        "other_text": other_text(args.seed, args.glue_samples),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
