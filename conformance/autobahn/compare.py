"""Compares an Autobahn report with the expected results, case by case.

usage: compare.py EXPECTED.json REPORT/index.json AGENT [--update]

Fails (exit 1) on any case whose behaviour differs, on a missing or extra
case, and on any FAILED case even if it were expected.
"""

import collections
import json
import sys


def case_key(case):
    return tuple(int(part) for part in case.split("."))


def main(argv):
    expected_path, report_path, agent = argv[1:4]
    update = "--update" in argv[4:]
    with open(report_path) as f:
        report = json.load(f)[agent]
    actual = {
        case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
        for case, r in report.items()
    }
    counts = collections.Counter(r["behavior"] for r in actual.values())
    print("autobahn: %d cases: %s" % (len(actual), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))

    if update:
        lines = [
            '  "%s": {"behavior": "%s", "behaviorClose": "%s"}' % (c, r["behavior"], r["behaviorClose"])
            for c, r in sorted(actual.items(), key=lambda kv: case_key(kv[0]))
        ]
        with open(expected_path, "w") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")
        print("autobahn: wrote %s" % expected_path)

    with open(expected_path) as f:
        expected = json.load(f)
    problems = []
    for case in sorted(set(expected) | set(actual), key=case_key):
        want, got = expected.get(case), actual.get(case)
        if want is None:
            problems.append("%s: not in the expected results (got %s)" % (case, got))
        elif got is None:
            problems.append("%s: missing from the report (expected %s)" % (case, want))
        elif want != got:
            problems.append("%s: expected %s, got %s" % (case, want, got))
    failed = sorted((c for c, r in actual.items() if "FAILED" in (r["behavior"], r["behaviorClose"])), key=case_key)
    problems += ["%s: FAILED" % c for c in failed]
    for p in problems:
        print("autobahn: " + p)
    if problems:
        print("autobahn: %d difference(s) from %s" % (len(problems), expected_path))
        return 1
    print("autobahn: every case as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
