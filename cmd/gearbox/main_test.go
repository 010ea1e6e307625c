package main

import (
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                  now.Add(-10 * time.Minute),
		"0s":                   now,
		"2026-11-25T09:00:00Z": time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC),
		"1764061200":           time.Unix(1764061200, 0),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-5m", "10x"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}

func TestParseLogOpts(t *testing.T) {
	lo, err := parseLogOpts("logrotate", []string{"max-size=64k", "max-files=3", "mode=non-blocking"})
	if err != nil || lo.MaxSize != 64<<10 || lo.MaxFiles != 3 || lo.Mode != "drop" || lo.Driver != "logrotate" {
		t.Fatalf("%v %v", lo, err)
	}
	if lo, err := parseLogOpts("", nil); lo != nil || err != nil {
		t.Errorf("no options: %v %v", lo, err)
	}
	for _, bad := range [][]string{{"max-size"}, {"max-size=x"}, {"max-files=0"}, {"mode=sometimes"}, {"colour=red"}} {
		if _, err := parseLogOpts("", bad); err == nil {
			t.Errorf("parseLogOpts(%q) accepted", bad)
		}
	}
}
