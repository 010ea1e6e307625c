package main

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// configFlag is a flag that overrides a config key: its name (the key's,
// with dashes), its usage and the key's field. A daemon's flags are one
// table of these: defineFlags makes the flags from it, applyFlags lays the
// flags given over the config read from the file.
type configFlag[C any] struct {
	name, usage string
	field       func(*C) any
}

// defineFlags defines the table's flags, bound to the fields of flagged,
// whose values are the defaults shown.
func defineFlags[C any](f *pflag.FlagSet, flagged *C, table []configFlag[C]) {
	for _, e := range table {
		switch p := e.field(flagged).(type) {
		case *string:
			f.StringVar(p, e.name, *p, e.usage)
		case *int:
			f.IntVar(p, e.name, *p, e.usage)
		case *bool:
			f.BoolVar(p, e.name, *p, e.usage)
		case *float64:
			f.Float64Var(p, e.name, *p, e.usage)
		case encoding.TextUnmarshaler: // units.Size and the like
			f.TextVar(p, e.name, p.(encoding.TextMarshaler), e.usage)
		case *time.Duration:
			f.DurationVar(p, e.name, *p, e.usage)
		case *[]string:
			f.Var(&listValue{p: p}, e.name, e.usage)
		default:
			panic(fmt.Sprintf("flag --%s: no flag type for %T", e.name, p))
		}
	}
}

// applyFlags copies the value of every flag given on the command line from
// flagged into cfg: flags override the file.
func applyFlags[C any](f *pflag.FlagSet, flagged, cfg *C, table []configFlag[C]) {
	for _, e := range table {
		if f.Changed(e.name) {
			reflect.ValueOf(e.field(cfg)).Elem().Set(reflect.ValueOf(e.field(flagged)).Elem())
		}
	}
}

// listValue is a comma-separated list flag; given again, it adds to the
// list. Blank items are dropped, so --isolation "" is the empty list.
type listValue struct {
	p   *[]string
	set bool
}

func (v *listValue) Set(s string) error {
	if !v.set {
		*v.p, v.set = nil, true
	}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*v.p = append(*v.p, item)
		}
	}
	return nil
}

func (v *listValue) String() string { return strings.Join(*v.p, ",") }
func (v *listValue) Type() string   { return "strings" }
