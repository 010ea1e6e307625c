package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

const defaultAgent = "unix:///run/gearbox/agent.sock"

func agentAddress(cmd *cobra.Command) string {
	if a, _ := cmd.Flags().GetString("agent"); a != "" {
		return a
	}
	if a := os.Getenv("GEARBOX_AGENT"); a != "" {
		return a
	}
	return defaultAgent
}

// tlsFlag reads a TLS flag or its environment variable.
func tlsFlag(cmd *cobra.Command, name, env string) string {
	if v, _ := cmd.Flags().GetString(name); v != "" {
		return v
	}
	return os.Getenv(env)
}

// transport picks the credentials for an agent address: none on the unix
// socket (the kernel tells the agent who we are), mutual TLS on TCP.
func transport(cmd *cobra.Command, addr string) (credentials.TransportCredentials, string, error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		return insecure.NewCredentials(), addr, nil
	case strings.HasPrefix(addr, "tcp://"):
		host := strings.TrimPrefix(addr, "tcp://")
		ca, cert, key := tlsFlag(cmd, "tls-ca", "GEARBOX_TLS_CA"), tlsFlag(cmd, "tls-cert", "GEARBOX_TLS_CERT"), tlsFlag(cmd, "tls-key", "GEARBOX_TLS_KEY")
		if ca == "" || cert == "" || key == "" {
			return nil, "", &exitError{code: 125, err: fmt.Errorf("agent address %q is TCP: give --tls-ca, --tls-cert and --tls-key (or GEARBOX_TLS_CA/CERT/KEY)", addr)}
		}
		cfg, err := tlsutil.Client(ca, cert, key)
		if err != nil {
			return nil, "", &exitError{code: 125, err: fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)}
		}
		return credentials.NewTLS(cfg), "dns:///" + host, nil
	}
	return nil, "", &exitError{code: 125, err: fmt.Errorf("agent address %q: use unix:///path or tcp://host:port", addr)}
}

// dial connects to the agent. The connection is lazy: errors show on the
// first call, and describe() makes them readable.
func dial(cmd *cobra.Command) (agentv1.AgentClient, func(), error) {
	addr := agentAddress(cmd)
	creds, target, err := transport(cmd, addr)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		// Session output and logs are bulk: fewer, larger reads, and
		// windows wide enough that the agent never waits for a window
		// update on a local socket (fixed: no BDP probing either).
		grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10),
		grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(8<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("agent address %q: %w", addr, err)
	}
	currentAgent = addr
	return agentv1.NewAgentClient(conn), func() { conn.Close() }, nil
}

var currentAgent string

// describe turns an error into the one line a person reads.
func describe(err error) string {
	if errors.Is(err, leaderconn.ErrNoMaster) {
		return fmt.Sprintf("%v (is a master running? gearbox master, or make dev; a master with TLS needs --tls-ca, --tls-cert, --tls-key)", err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		// grpc reports a failed dial only as text in an Unavailable status.
		if strings.Contains(st.Message(), "Error while dialing") || strings.HasPrefix(st.Message(), "connection error") {
			if currentMaster != "" {
				return fmt.Sprintf("cannot reach the master at %s: is it running? (gearbox master, or make dev; a master with TLS needs --tls-ca, --tls-cert, --tls-key) — %s", currentMaster, st.Message())
			}
			return fmt.Sprintf("cannot reach the agent at %s: is it running? (gearbox agent, or make dev) — %s", currentAgent, st.Message())
		}
	case codes.Canceled:
		return "cancelled"
	}
	return st.Message()
}

// commandExit is the exit status for an error of a launch or a session:
// Docker's 127 (command not found), 126 (not executable), else 125.
func commandExit(err error) int {
	switch typesv1.ErrorReason(err) {
	case typesv1.ErrorReasonCommandNotFound:
		return 127
	case typesv1.ErrorReasonCommandNotExecutable:
		return 126
	}
	return 125
}

// isCode says whether err is a gRPC status with code c.
func isCode(err error, c codes.Code) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == c
}

// addOutputFlag adds -o json.
func addOutputFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "output", "o", "", "output format: json")
}

func checkOutput(o string) error {
	if o != "" && o != "json" {
		return &exitError{code: 125, err: fmt.Errorf("unknown output format %q: use -o json", o)}
	}
	return nil
}

// printJSON prints protobuf messages as a JSON array (or one object).
func printJSON(w io.Writer, msgs ...proto.Message) error {
	m := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}
	var raw []json.RawMessage
	for _, msg := range msgs {
		b, err := m.Marshal(msg)
		if err != nil {
			return err
		}
		raw = append(raw, b)
	}
	var v any = raw
	if raw == nil {
		v = []any{}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func ctxOf(cmd *cobra.Command) context.Context {
	if cmd.Context() != nil {
		return cmd.Context()
	}
	return context.Background()
}

// eachArg runs fn for every argument, as docker rm/kill do: it prints what
// succeeded on stdout and each failure on stderr, and exits 125 if any failed.
func eachArg(cmd *cobra.Command, args []string, fn func(agentv1.AgentClient, string) (string, error)) error {
	c, closeConn, err := dial(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	failed := false
	for _, a := range args {
		out, err := fn(c, a)
		if err != nil {
			failed = true
			fmt.Fprintln(cmd.ErrOrStderr(), "gearbox:", explain(cmd, err))
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), out)
	}
	if failed {
		return &exitError{code: 125}
	}
	return nil
}

// needArgs says which arguments are missing, e.g. "run needs IMAGE".
func needArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return &exitError{code: 125, err: fmt.Errorf("%s needs %s (see gearbox %s --help)", cmd.Name(), what, cmd.CommandPath()[len("gearbox "):])}
		}
		return nil
	}
}

// exactArgs is needArgs that also refuses extra arguments.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := needArgs(n, what)(cmd, args); err != nil {
			return err
		}
		if len(args) > n {
			return &exitError{code: 125, err: fmt.Errorf("%s takes only %s, got %q (see gearbox %s --help)", cmd.Name(), what, args, cmd.CommandPath()[len("gearbox "):])}
		}
		return nil
	}
}
