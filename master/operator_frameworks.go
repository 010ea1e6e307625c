package master

import (
	"context"
	"math"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// The operator's view of frameworks, roles, weights and offers.

func (o *operator) GetFrameworks(context.Context, *masterv1.GetFrameworksRequest) (*masterv1.GetFrameworksResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.GetFrameworksResponse{}
	for _, id := range sortedKeys(m.frameworks) {
		out.Frameworks = append(out.Frameworks, m.frameworkToProto(m.frameworks[id]))
	}
	return out, nil
}

func (o *operator) GetRoles(context.Context, *masterv1.GetRolesRequest) (*masterv1.GetRolesResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	roles := map[string]*masterv1.Role{}
	get := func(name string) *masterv1.Role {
		r := roles[name]
		if r == nil {
			r = &masterv1.Role{Name: name, Weight: m.weightOf(name), Allocated: &masterv1.Resources{}, Offered: &masterv1.Resources{}}
			roles[name] = r
		}
		return r
	}
	for role := range m.weights {
		get(role)
	}
	for _, id := range sortedKeys(m.frameworks) {
		for _, role := range m.frameworks[id].Roles {
			r := get(role)
			r.Frameworks = append(r.Frameworks, id)
		}
	}
	for _, t := range m.tasks {
		if t.FrameworkID != "" && !terminal(t.State) {
			r := get(t.Role)
			r.Allocated = resToProto(addRes(resFromProto(r.Allocated), t.Resources))
		}
	}
	for _, of := range m.offers {
		r := get(of.role)
		r.Offered = resToProto(addRes(resFromProto(r.Offered), of.res))
	}
	out := &masterv1.GetRolesResponse{}
	for _, name := range sortedKeys(roles) {
		out.Roles = append(out.Roles, roles[name])
	}
	return out, nil
}

func (o *operator) GetWeights(context.Context, *masterv1.GetWeightsRequest) (*masterv1.GetWeightsResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.GetWeightsResponse{}
	for _, role := range sortedKeys(m.weights) {
		out.Weights = append(out.Weights, &masterv1.WeightInfo{Role: role, Weight: m.weights[role]})
	}
	return out, nil
}

// UpdateWeights sets roles' weights (Mesos's UPDATE_WEIGHTS): positive
// and finite; all or none are applied.
func (o *operator) UpdateWeights(ctx context.Context, req *masterv1.UpdateWeightsRequest) (*masterv1.UpdateWeightsResponse, error) {
	m := o.m
	if len(req.GetWeights()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "weights: give at least one ROLE=WEIGHT")
	}
	for _, w := range req.GetWeights() {
		if err := checkRole(w.GetRole()); err != nil {
			return nil, err
		}
		if !(w.GetWeight() > 0) || math.IsInf(w.GetWeight(), 0) {
			return nil, status.Errorf(codes.InvalidArgument, "weights: role %q: weight %g: give a positive number", w.GetRole(), w.GetWeight())
		}
	}
	m.mu.Lock()
	var g uint64
	for _, w := range req.GetWeights() {
		m.weights[w.GetRole()] = w.GetWeight()
		g = m.p.markWeight(w.GetRole())
	}
	m.alloc.UpdateWeights(m.weights)
	m.wakeAllocator()
	m.mu.Unlock()
	if err := m.p.wait(ctx, g); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the registry could not record the weights: %v", err)
	}
	return &masterv1.UpdateWeightsResponse{}, nil
}

// TeardownFramework removes a framework at once (Mesos's TEARDOWN): its
// offers are rescinded and its tasks killed.
func (o *operator) TeardownFramework(ctx context.Context, req *masterv1.TeardownFrameworkRequest) (*masterv1.TeardownFrameworkResponse, error) {
	m := o.m
	m.mu.Lock()
	f := m.frameworks[req.GetFrameworkId()]
	if f == nil {
		m.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "no framework %q: gearbox frameworks lists them", req.GetFrameworkId())
	}
	g := m.removeFramework(f, "an operator tore it down")
	m.mu.Unlock()
	if err := m.p.wait(ctx, g); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the registry could not record the teardown: %v", err)
	}
	return &masterv1.TeardownFrameworkResponse{}, nil
}

func (o *operator) GetOffers(context.Context, *masterv1.GetOffersRequest) (*masterv1.GetOffersResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.GetOffersResponse{}
	for _, of := range m.offers {
		host := ""
		if a := m.agents[of.agentID]; a != nil {
			host = a.Hostname
		}
		out.Offers = append(out.Offers, &masterv1.OfferInfo{Id: of.id, FrameworkId: of.frameworkID, AgentId: of.agentID,
			Hostname: host, Role: of.role, Resources: resToProto(of.res), OfferedAt: ts(of.at)})
	}
	sort.Slice(out.Offers, func(i, j int) bool { return out.Offers[i].Id < out.Offers[j].Id })
	return out, nil
}
