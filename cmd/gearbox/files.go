package main

import (
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// gearbox fs: a container's sandbox, browsed through the agent's
// ListFiles and ReadFile (operator role).
func newFsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "fs", Short: "Browse a container's sandbox (its output files and what it wrote to /mnt/sandbox)"}
	cmd.AddCommand(newFsLsCmd(), newFsCatCmd(), newFsTailCmd())
	return cmd
}

// splitFileArg reads ID[:PATH]; paths are relative to the sandbox.
func splitFileArg(arg string, needPath bool) (id, path string, err error) {
	id, path, _ = strings.Cut(arg, ":")
	if id == "" || (needPath && path == "") {
		return "", "", &exitError{code: 125, err: fmt.Errorf("write CONTAINER:PATH, e.g. web:stdout (PATH relative to the sandbox), not %q", arg)}
	}
	return id, path, nil
}

func newFsLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls CONTAINER[:PATH]",
		Short:   "List a directory of a container's sandbox",
		Example: "  gearbox fs ls web\n  gearbox fs ls web:containers",
		Args:    exactArgs(1, "one CONTAINER[:PATH]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, p, err := splitFileArg(args[0], false)
			if err != nil {
				return err
			}
			c, closeConn, err := dialFor(cmd, output, dial)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.ListFiles(ctxOf(cmd), &agentv1.ListFilesRequest{ContainerId: id, Path: p})
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), protoList(resp.FileInfos)...)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODE\tSIZE\tMODIFIED\tNAME")
			for _, fi := range resp.FileInfos {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", modeString(fi.GetMode()), fi.GetSize(),
					fi.GetMtime().AsTime().Local().Format(time.DateTime), fi.GetPath())
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// modeString renders st_mode as ls -l does (drwxr-xr-x).
func modeString(m uint32) string {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	s := mode.String()
	// Go writes L, p, S, D; ls writes l, p, s, b/c.
	switch {
	case mode&fs.ModeSymlink != 0:
		s = "l" + s[1:]
	case mode&fs.ModeCharDevice != 0:
		s = "c" + s[2:]
	case mode&fs.ModeDevice != 0:
		s = "b" + s[1:]
	case mode&fs.ModeSocket != 0:
		s = "s" + s[1:]
	}
	return s
}

// readFile streams a file of a sandbox to w.
func readFile(cmd *cobra.Command, req *agentv1.ReadFileRequest, w io.Writer) error {
	c, closeConn, err := dial(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	st, err := c.ReadFile(ctxOf(cmd), req)
	if err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(m.GetData()); err != nil {
			return err
		}
	}
}

func newFsCatCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "cat CONTAINER:PATH",
		Short:   "Print a file of a container's sandbox",
		Example: "  gearbox fs cat web:stdout",
		Args:    exactArgs(1, "one CONTAINER:PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, p, err := splitFileArg(args[0], true)
			if err != nil {
				return err
			}
			return readFile(cmd, &agentv1.ReadFileRequest{ContainerId: id, Path: p}, cmd.OutOrStdout())
		},
	}
}

func newFsTailCmd() *cobra.Command {
	var follow bool
	var lines int32
	cmd := &cobra.Command{
		Use:     "tail [-f] [-n N] CONTAINER:PATH",
		Short:   "Print the end of a file of a container's sandbox, and with -f what is appended until the container ends",
		Example: "  gearbox fs tail -f web:stdout",
		Args:    exactArgs(1, "one CONTAINER:PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, p, err := splitFileArg(args[0], true)
			if err != nil {
				return err
			}
			if lines < 0 {
				return &exitError{code: 125, err: fmt.Errorf("-n must not be negative")}
			}
			return readFile(cmd, &agentv1.ReadFileRequest{ContainerId: id, Path: p, Follow: follow, TailLines: &lines}, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what is appended until the container ends")
	cmd.Flags().Int32VarP(&lines, "lines", "n", 10, "start at the last N lines")
	return cmd
}
