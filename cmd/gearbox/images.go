package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/distribution/reference"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/internal/version"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images on the agent"}
	cmd.AddCommand(newPullCmd(), newImportCmd(), newImagesCmd(), newImageRmCmd(), newImageTagCmd(), newImagePruneCmd())
	return cmd
}

// registryAuth reads the user's Docker config ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json, credential helpers included) for ref's registry.
func registryAuth(ref string) (*agentv1.RegistryAuth, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, nil // the agent reports malformed references
	}
	host := reference.Domain(named)
	key := host
	if host == "docker.io" {
		key = "https://index.docker.io/v1/"
	}
	cf, err := dockerconfig.Load(dockerconfig.Dir())
	if err != nil {
		return nil, fmt.Errorf("reading Docker credentials in %s: %w", dockerconfig.Dir(), err)
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("reading Docker credentials for %s: %w", host, err)
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return nil, nil
	}
	return &agentv1.RegistryAuth{Username: ac.Username, Password: ac.Password, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}, nil
}

func newPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "pull IMAGE",
		Short:   "Pull an image from a registry onto the agent",
		Long:    "Pull an image onto the agent. Credentials come from your Docker config (docker login).",
		Example: "  gearbox image pull busybox\n  gearbox image pull 127.0.0.1:5000/team/app:1.2",
		Args:    exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			auth, err := registryAuth(args[0])
			if err != nil {
				return err
			}
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			st, err := c.PullImage(ctxOf(cmd), &agentv1.PullImageRequest{Image: args[0], Auth: auth})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var pr progressPrinter = &linePrinter{w: out, last: map[string]string{}}
			if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				pr = &barPrinter{w: out}
			}
			for {
				m, err := st.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					pr.finish()
					return err
				}
				switch ev := m.Event.(type) {
				case *agentv1.PullImageResponse_Progress:
					pr.update(ev.Progress)
				case *agentv1.PullImageResponse_Done:
					pr.finish()
					fmt.Fprintf(out, "%s: pulled %s (%s)\n", ev.Done.Name, shortDigest(ev.Done.Digest), units.Human(ev.Done.Size))
				}
			}
		},
	}
}

type progressPrinter interface {
	update(*agentv1.LayerProgress)
	finish()
}

// linePrinter writes a line per layer status change, for logs and pipes.
type linePrinter struct {
	w    io.Writer
	last map[string]string
}

func (p *linePrinter) update(l *agentv1.LayerProgress) {
	if p.last[l.Digest] == l.Status {
		return
	}
	p.last[l.Digest] = l.Status
	fmt.Fprintf(p.w, "%s: %s %s\n", shortDigest(l.Digest), l.Status, units.Human(l.Total))
}

func (p *linePrinter) finish() {}

// barPrinter redraws one bar per layer on a terminal.
type barPrinter struct {
	w      io.Writer
	order  []string
	layers map[string]*agentv1.LayerProgress
	drawn  int
}

func (p *barPrinter) update(l *agentv1.LayerProgress) {
	if p.layers == nil {
		p.layers = map[string]*agentv1.LayerProgress{}
	}
	if _, ok := p.layers[l.Digest]; !ok {
		p.order = append(p.order, l.Digest)
	}
	p.layers[l.Digest] = l
	p.draw()
}

func (p *barPrinter) draw() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
	}
	for _, d := range p.order {
		l := p.layers[d]
		const width = 30
		filled := 0
		if l.Total > 0 {
			filled = int(float64(width) * float64(l.Offset) / float64(l.Total))
		}
		filled = min(max(filled, 0), width)
		fmt.Fprintf(p.w, "\x1b[2K%s: %-11s [%s%s] %s/%s\n", shortDigest(d), l.Status,
			strings.Repeat("=", filled), strings.Repeat(" ", width-filled), units.Human(l.Offset), units.Human(l.Total))
	}
	p.drawn = len(p.order)
}

func (p *barPrinter) finish() {}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func newImportCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import [--name REF] FILE",
		Short: "Import a docker-archive (docker save), an OCI layout tar or an ACI (.aci); - reads stdin",
		Args:  exactArgs(1, "one FILE (- for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			st, err := c.ImportImage(ctxOf(cmd))
			if err != nil {
				return err
			}
			if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Options{Options: &agentv1.ImportOptions{Name: name}}}); err != nil {
				return err
			}
			buf := make([]byte, 1<<20)
			for {
				n, rerr := r.Read(buf)
				if n > 0 {
					if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Data{Data: buf[:n]}}); err != nil {
						break // the agent refused: CloseAndRecv says why
					}
				}
				if rerr == io.EOF {
					break
				}
				if rerr != nil {
					return fmt.Errorf("reading %s: %w", args[0], rerr)
				}
			}
			resp, err := st.CloseAndRecv()
			if err != nil {
				return err
			}
			for _, im := range resp.Images {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: imported %s (%s)\n", im.Name, shortDigest(im.Digest), units.Human(im.Size))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "REPO:TAG names the archive's one image exactly so; REPO keeps the archive's tags under REPO")
	return cmd
}

func newImagesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List the agent's images", Args: cobra.NoArgs}
	return listCmd(cmd, dial, agentv1.AgentClient.ListImages, &agentv1.ListImagesRequest{},
		(*agentv1.ListImagesResponse).GetImages, func(w io.Writer, r *agentv1.ListImagesResponse) error {
			return table(w, "IMAGE\tDIGEST\tSIZE\tCREATED", func(tw io.Writer) {
				for _, im := range r.Images {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Name, shortDigest(im.Digest), units.Human(im.Size), ago(im.CreatedAt.AsTime()))
				}
			})
		})
}

func newImageRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] IMAGE…",
		Aliases: []string{"remove"},
		Short:   "Remove images from the agent",
		Args:    needArgs(1, "an IMAGE"),
		RunE: func(cmd *cobra.Command, refs []string) error {
			return eachArg(cmd, refs, func(c agentv1.AgentClient, ref string) (string, error) {
				_, err := c.RemoveImage(ctxOf(cmd), &agentv1.RemoveImageRequest{Image: ref, Force: force})
				return "removed " + ref, err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if containers were created from it")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the agent's versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "Client: %s %s %s\n", version.Version, version.GitCommit, runtime.Version())
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			v, err := c.GetVersion(ctxOf(cmd), &agentv1.GetVersionRequest{})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Agent:  %s %s %s (containerd %s)\n", v.Version, v.GitCommit, v.GoVersion, v.ContainerdVersion)
			return nil
		},
	}
}
