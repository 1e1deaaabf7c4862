#!/usr/bin/env python3
"""An example fine-tuning dataset: English number words to digits.

Made with (from the repository root; Python 3.8+ standard library only):
  python3 tools/make_numbers_dataset.py

Writes
  examples/numbers/train.jsonl  3000 chat records
  examples/numbers/eval.jsonl    200 chat records

Each record is {"messages": [...]} with a user turn that asks, in one of several phrasings, for a
number written in words as digits ("Write as digits: three hundred and forty-two thousand and
seven"), sometimes after a system turn, and an assistant turn that is only the digits ("342007").

The numbers run from 0 to 4,999,999: the count of digits is drawn first (so small and large
numbers are both common), then the digits, and in about a third of the numbers some digits are
zeroed ("two million and fifty", "one thousand and seven": the hard cases). The words come both in
the British style ("three hundred and forty-two") and without "and", with and without hyphens
("forty-two", "forty two"), sometimes with commas between groups or "a" for a leading "one"
("a thousand and one").

The eval numbers have three digits or more and none of them is a training number: the split tests
composing words the model has seen into numbers it has not. The same seed gives the same files.
"""
import argparse
import json
import os
import random

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
        "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
GROUPS = [(1_000_000, "million"), (1_000, "thousand"), (1, "")]
MAX_NUMBER = 4_999_999

# Weights of the count of digits 1..7.
DIGIT_WEIGHTS = [1, 2, 3, 4, 4, 3, 3]

PHRASINGS = [
    "Write as digits: {w}",
    "Write this number in digits: {w}",
    "Convert to digits: {w}",
    "What is {w} written as a number?",
    "How do you write {w} in digits?",
    "{w}\n\nWrite that as a number, digits only.",
    "Turn these words into a number: {w}",
    "Digits only, please: {w}",
    'Please write "{w}" using digits.',
    'What number is "{w}"?',
    "Number in words: {w}\nNumber in digits:",
    "Give me the numeral for {w}.",
]
SYSTEMS = ["Answer with digits only.", "You convert numbers written in words into digits.", "Reply with the number and nothing else."]
SYSTEM_SHARE = 0.15


def below_hundred(n, hyphen):
    if n < 20:
        return ONES[n]
    tens, units = divmod(n, 10)
    if units == 0:
        return TENS[tens]
    return TENS[tens] + ("-" if hyphen else " ") + ONES[units]


def below_thousand(n, use_and, hyphen):
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(ONES[hundreds] + " hundred")
    if rest:
        if hundreds and use_and:
            parts.append("and")
        parts.append(below_hundred(rest, hyphen))
    return " ".join(parts)


def words(n, use_and, hyphen, commas, a_for_one):
    """n in words: "three hundred and forty-two thousand and seven" (use_and, hyphen)."""
    if n == 0:
        return "zero"
    chunks = []
    rest = n
    for value, name in GROUPS:
        group, rest = divmod(rest, value)
        if group:
            chunks.append((group, name))
    pieces = [below_thousand(g, use_and, hyphen) + (" " + name if name else "") for g, name in chunks]
    if a_for_one and pieces[0].startswith("one ") and len(pieces[0].split()) == 2:
        pieces[0] = "a " + pieces[0][len("one "):]
    text = pieces[0]
    for i, piece in enumerate(pieces[1:], start=1):
        last_small = i == len(chunks) - 1 and chunks[i][1] == "" and chunks[i][0] < 100
        if use_and and last_small:
            text += " and " + piece
        else:
            text += (", " if commas else " ") + piece
    return text


def draw_number(rng, min_digits):
    weights = [w if d + 1 >= min_digits else 0 for d, w in enumerate(DIGIT_WEIGHTS)]
    digits = rng.choices(range(1, 8), weights=weights)[0]
    low = 0 if digits == 1 else 10 ** (digits - 1)
    n = rng.randrange(low, min(10 ** digits, MAX_NUMBER + 1))
    if digits >= 3 and rng.random() < 0.35:
        # Zero some digits below the first: "five hundred and three thousand and ten".
        text = list(str(n))
        for i in range(1, len(text)):
            if rng.random() < 0.5:
                text[i] = "0"
        n = int("".join(text))
    return n


def record(rng, n):
    w = words(n, use_and=rng.random() < 0.5, hyphen=rng.random() < 0.7, commas=rng.random() < 0.15, a_for_one=rng.random() < 0.3)
    messages = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    messages.append({"role": "user", "content": rng.choice(PHRASINGS).format(w=w)})
    messages.append({"role": "assistant", "content": str(n)})
    return {"messages": messages}


def check_words():
    """A few spellings checked by hand, so that a change to the speller shows."""
    assert words(342007, True, True, False, False) == "three hundred and forty-two thousand and seven"
    assert words(342007, False, False, False, False) == "three hundred forty two thousand seven"
    assert words(2000050, True, True, False, False) == "two million and fifty"
    assert words(1001, True, True, False, True) == "a thousand and one"
    assert words(1100, True, True, False, False) == "one thousand one hundred"
    assert words(4999999, True, True, True, False) == \
        "four million, nine hundred and ninety-nine thousand, nine hundred and ninety-nine"
    assert words(0, True, True, False, False) == "zero"
    assert words(115, True, True, False, False) == "one hundred and fifteen"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--eval", type=int, default=200)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "examples", "numbers"))
    args = parser.parse_args()
    check_words()
    rng = random.Random(args.seed)

    # Eval first: distinct numbers of three digits or more, then training numbers that avoid them.
    eval_numbers = []
    while len(eval_numbers) < args.eval:
        n = draw_number(rng, min_digits=3)
        if n >= 100 and n not in eval_numbers:
            eval_numbers.append(n)
    held_out = set(eval_numbers)
    train_numbers = []
    while len(train_numbers) < args.train:
        n = draw_number(rng, min_digits=1)
        if n not in held_out:
            train_numbers.append(n)

    os.makedirs(args.out, exist_ok=True)
    for name, numbers in [("train.jsonl", train_numbers), ("eval.jsonl", eval_numbers)]:
        path = os.path.join(args.out, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for n in numbers:
                f.write(json.dumps(record(rng, n), ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"{path}: {len(numbers)} records, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
