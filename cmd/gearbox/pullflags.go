package main

import (
	"github.com/spf13/pflag"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// pullFlags: --pull if-not-present|always|never, Docker's flag (its
// "missing" is accepted for if-not-present).
type pullFlags struct {
	policy string
}

func addPullFlags(fs *pflag.FlagSet) *pullFlags {
	f := &pullFlags{}
	fs.StringVar(&f.policy, "pull", "", "pull the image: if-not-present (default), always, never")
	return f
}

var pullPolicies = map[string]typesv1.PullPolicy{
	"":               typesv1.PullPolicy_PULL_POLICY_UNSPECIFIED,
	"if-not-present": typesv1.PullPolicy_PULL_IF_NOT_PRESENT,
	"missing":        typesv1.PullPolicy_PULL_IF_NOT_PRESENT,
	"always":         typesv1.PullPolicy_PULL_ALWAYS,
	"never":          typesv1.PullPolicy_PULL_NEVER,
}

func (f *pullFlags) apply(req *agentv1.LaunchContainerRequest) error {
	p, ok := pullPolicies[f.policy]
	if !ok {
		return flagErr("pull", "%q: use if-not-present, always or never", f.policy)
	}
	req.PullPolicy = p
	return nil
}
