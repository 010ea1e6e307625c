package master

import (
	"context"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/internal/grpcserver"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// standbyAnswers are the calls a standby master answers itself; every
// other call of the master's services is refused with NOT_LEADER, naming
// the leader. gRPC health and reflection answer too.
var standbyAnswers = map[string]bool{
	"/" + masterv1.Operator_ServiceDesc.ServiceName + "/GetMasters": true,
	"/" + masterv1.Operator_ServiceDesc.ServiceName + "/GetHealth":  true,
}

// serveStandby serves a standby master on lis (and the unix socket) until
// the returned stop.
func (h *ha) serveStandby(lis net.Listener) (stop func(), err error) {
	m := h.m
	authz, _ := newAuthorizer(m.cfg) // checked by Validate
	opts, err := m.listenerOptions(authz)
	if err != nil {
		lis.Close()
		return nil, err
	}
	srv := grpcserver.New(grpcserver.Config{
		Register: func(gs *grpc.Server) {
			masterv1.RegisterAgentGatewayServer(gs, masterv1.UnimplementedAgentGatewayServer{})
			masterv1.RegisterOperatorServer(gs, &standbyOperator{h: h})
			schedulerv1.RegisterSchedulerServer(gs, schedulerv1.UnimplementedSchedulerServer{})
		},
		Authorize: func(ctx context.Context, method string) error {
			if err := authz.check(ctx, method); err != nil {
				return err
			}
			return h.refuse(method)
		},
		Options: []grpc.ServerOption{
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		},
		Grace: time.Second,
	})
	srv.Serve(lis, opts...)
	if m.cfg.Socket != "" {
		ulis, err := listenUnix(m.cfg.Socket)
		if err != nil {
			srv.Stop()
			return nil, err
		}
		srv.Serve(ulis, opts...)
	}
	return srv.Stop, nil
}

// refuse is NOT_LEADER for every call a standby does not answer.
func (h *ha) refuse(method string) error {
	if standbyAnswers[method] || !strings.HasPrefix(method, "/gearbox.") {
		return nil
	}
	leader, _ := h.leaderAddr.Load().(string)
	if leader == h.self.Address {
		leader = "" // this master, no longer or not yet leading
	}
	return typesv1.NotLeader(leader)
}

// refuseChange refuses an operator's change (every Operator call that
// is not a read) while the leader's etcd does not answer, before anything
// changes in memory: a refused change leaves no trace.
func (m *Master) refuseChange(method string) error {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if m.ha == nil || m.ha.etcdUp.Load() || svc != masterv1.Operator_ServiceDesc.ServiceName {
		return nil
	}
	if _, read := operatorNeeds[name]; read {
		return nil
	}
	return status.Errorf(codes.Unavailable, "%s: %v", name, m.ha.unwritable(nil))
}

// standbyOperator answers a standby's GetMasters and GetHealth.
type standbyOperator struct {
	masterv1.UnimplementedOperatorServer
	h *ha
}

func (o *standbyOperator) GetMasters(ctx context.Context, _ *masterv1.GetMastersRequest) (*masterv1.GetMastersResponse, error) {
	return o.h.getMasters(ctx)
}

func (o *standbyOperator) GetHealth(context.Context, *masterv1.GetHealthRequest) (*masterv1.GetHealthResponse, error) {
	out := &masterv1.GetHealthResponse{Healthy: true, Version: versionString(), StartedAt: timestamppb.New(o.h.m.startedAt)}
	o.h.health(out)
	return out, nil
}

func (h *ha) getMasters(ctx context.Context) (*masterv1.GetMastersResponse, error) {
	ms, err := h.masters(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v: check that etcd runs and this master reaches it", err)
	}
	return &masterv1.GetMastersResponse{Masters: ms}, nil
}
