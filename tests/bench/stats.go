package main

import (
	"fmt"
	"math"
	"slices"
)

// minRounds is the fewest rounds whose paired ratios can say whether a
// difference exceeds the noise. With 3 rounds and no real difference, all
// three ratios land on one side of 1.0 by chance in 1 run of 4; with 5, in 1
// of 16 (a sign test).
const minRounds = 3

// Noise verdicts of a ratio.
const (
	beyondNoise  = "beyond noise"
	withinNoise  = "within noise"
	tooFewRounds = "too few rounds"
)

// Metrics a ratio compares.
const (
	metricUDP   = "udp_kpps"
	metricRRP50 = "rr_p50_us"
)

// roundsUnknown says why a verdict leaves the noise out.
func roundsUnknown(n int) string {
	if n == 1 {
		return "1 round: noise unknown"
	}
	return fmt.Sprintf("%d rounds: noise unknown", n)
}

// Stat is one metric of one row over the rounds: median, min-max, and the
// median absolute deviation relative to the median, a spread that one
// disturbed round does not inflate.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	MADPct float64   `json:"mad_percent"`
	All    []float64 `json:"samples"` // in round order
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	med := median(xs)
	dev := make([]float64, len(xs))
	for i, x := range xs {
		dev[i] = math.Abs(x - med)
	}
	s := Stat{Median: med, Min: slices.Min(xs), Max: slices.Max(xs), All: xs}
	if med != 0 {
		s.MADPct = 100 * median(dev) / med
	}
	return s
}

// Ratio compares one row with another of the same profile and pair, measured
// in the same rounds: one ratio per round (paired, so that drift between
// rounds cancels), their median and range.
type Ratio struct {
	Profile  string    `json:"profile"`
	Pair     string    `json:"pair"`
	Path     string    `json:"path"`
	Metric   string    `json:"metric"` // udp_kpps or rr_p50_us
	Versus   string    `json:"versus"` // the other row's path: limit, ptp, bridge
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	PerRound []float64 `json:"per_round"`
	Noise    string    `json:"noise"` // beyond noise, within noise or too few rounds
}

// pairedRatios divides a by b round by round; nil when the rows were not
// measured in the same rounds or b has a zero.
func pairedRatios(a, b []float64) []float64 {
	if len(a) == 0 || len(a) != len(b) {
		return nil
	}
	out := make([]float64, len(a))
	for i := range a {
		if b[i] == 0 {
			return nil
		}
		out[i] = a[i] / b[i]
	}
	return out
}

// newRatio summarises paired ratios; the difference exceeds the noise only
// when every round's ratio lies on the same side of 1.0.
func newRatio(perRound []float64) Ratio {
	s := stat(perRound)
	r := Ratio{Median: s.Median, Min: s.Min, Max: s.Max, PerRound: perRound}
	switch {
	case len(perRound) < minRounds:
		r.Noise = tooFewRounds
	case s.Min > 1 || s.Max < 1:
		r.Noise = beyondNoise
	default:
		r.Noise = withinNoise
	}
	return r
}

// String is a ratio as the tables print it.
func (r *Ratio) String() string {
	if r == nil {
		return "-"
	}
	switch r.Noise {
	case tooFewRounds:
		return fmt.Sprintf("%.2fx (noise unknown)", r.Median)
	case withinNoise:
		return fmt.Sprintf("%.2fx (%.2f-%.2f), within noise", r.Median, r.Min, r.Max)
	}
	return fmt.Sprintf("%.2fx (%.2f-%.2f)", r.Median, r.Min, r.Max)
}

// Target outcomes.
const (
	targetMet         = "met"
	targetMissed      = "missed"
	targetWithinNoise = "within noise"
)

// Target is one goal of issues 9 and 18 and whether this run met it.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Min    float64 `json:"min,omitempty"` // the paired ratios' range, for a ratio target
	Max    float64 `json:"max,omitempty"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Result string  `json:"result"` // met, missed or within noise
	Detail string  `json:"detail"`
}

// target judges a single number against goal.
func target(name, want string, got float64, unit string, met bool, goal float64) Target {
	t := Target{Name: name, Want: want, Got: got, Unit: unit, Met: met, Result: targetMet, Detail: targetMet}
	if !met {
		t.Result, t.Detail = targetMissed, missedBy(got, goal)
	}
	return t
}

func missedBy(got, goal float64) string {
	pct := 100 * math.Abs(got-goal) / goal
	if pct < 0.95 {
		// Rounded to a whole percent it would read "missed by 0%".
		return fmt.Sprintf("missed by %.1f%%", pct)
	}
	return fmt.Sprintf("missed by %.0f%%", pct)
}

// ratioTarget judges paired ratios against goal: met only when every
// round's ratio meets it, missed when none does, and within noise when
// the rounds disagree. With too few rounds the median decides and the
// detail says the noise is unknown.
func ratioTarget(name, want string, r Ratio, atLeast bool, goal float64) Target {
	meets := func(x float64) bool {
		if atLeast {
			return x >= goal
		}
		return x <= goal
	}
	t := Target{Name: name, Want: want, Got: r.Median, Min: r.Min, Max: r.Max, Unit: "x"}
	if r.Noise == tooFewRounds {
		t = target(name, want, r.Median, "x", meets(r.Median), goal)
		t.Min, t.Max = r.Min, r.Max
		t.Detail += fmt.Sprintf(" (%s)", roundsUnknown(len(r.PerRound)))
		return t
	}
	worst, best := r.Min, r.Max
	if !atLeast {
		worst, best = r.Max, r.Min
	}
	switch {
	case meets(worst):
		t.Met, t.Result, t.Detail = true, targetMet, targetMet
	case !meets(best):
		t.Result, t.Detail = targetMissed, missedBy(r.Median, goal)
	default:
		t.Result = targetWithinNoise
		t.Detail = fmt.Sprintf("within noise (rounds %.2f-%.2fx)", r.Min, r.Max)
	}
	return t
}
