// Command localcluster runs the project's local control plane (see package localcluster).
//
//	localcluster up   [--dir DIR] [--real-node]  start a cluster that outlives the command
//	localcluster down [--dir DIR]             stop it
//	localcluster run  [--dir DIR] [--real-node] -- CMD ...  start a cluster, run CMD with KUBECONFIG set, stop it
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/zerowake/zerowake/hack/localcluster"
)

const usage = `usage:
  localcluster up   [--dir DIR] [--nodes N] [--real-node]
                                                       start a cluster in the background
  localcluster down [--dir DIR]                        stop the cluster that up started
  localcluster run  [--dir DIR] [--nodes N] [--real-node] -- CMD...
                                                       start a cluster, run CMD with KUBECONFIG
                                                       set, and stop the cluster when CMD exits

--real-node adds a real node (root only) and runs the cluster in a network namespace; run
passes its path to CMD as $LOCALCLUSTER_NETNS.

up and down use DIR (default %s); run uses a temporary
directory unless --dir is given. Component logs are in DIR/logs.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, usage, localcluster.DefaultDir())
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(args)
	case "down":
		err = down(args)
	case "run":
		var code int
		code, err = run(args)
		if err == nil {
			os.Exit(code)
		}
	case "-h", "--help", "help":
		fmt.Printf(usage, localcluster.DefaultDir())
		return
	default:
		fmt.Fprintf(os.Stderr, "localcluster: unknown command %q\n"+usage, cmd, localcluster.DefaultDir())
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", strings.TrimPrefix(err.Error(), "localcluster: "))
		os.Exit(1)
	}
}

func flags(name, defaultDir string, args []string) (dir string, nodes int, rest []string, err error) {
	dir, nodes, _, rest, err = flagsNode(name, defaultDir, args)
	return dir, nodes, rest, err
}

func flagsNode(name, defaultDir string, args []string) (dir string, nodes int, realNode bool, rest []string, err error) {
	fs := flag.NewFlagSet("localcluster "+name, flag.ContinueOnError)
	fs.StringVar(&dir, "dir", defaultDir, "directory for the cluster's state and logs")
	if name != "down" {
		fs.IntVar(&nodes, "nodes", 1, "number of kwok nodes")
	}
	if name != "down" {
		fs.BoolVar(&realNode, "real-node", false, "also start a real node (root only), the cluster inside a network namespace")
	}
	if err := fs.Parse(args); err != nil {
		return "", 0, false, nil, err
	}
	return dir, nodes, realNode, fs.Args(), nil
}

func up(args []string) error {
	dir, nodes, realNode, rest, err := flagsNode("up", localcluster.DefaultDir(), args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("up takes no arguments, got %q", rest)
	}
	if kubeconfig, ok := localcluster.Running(dir); ok {
		fmt.Printf("A cluster is already running in %s.\n\n  export KUBECONFIG=%s\n\nStop it with: localcluster down --dir %s\n", dir, kubeconfig, dir)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Detach: true, Nodes: nodes, RealNode: realNode})
	if err != nil {
		return err
	}
	if n := c.Node(); n != nil {
		fmt.Printf("\nThe real node %s and the cluster run in the network namespace %s (nsenter --net=%s).\n", n.Name(), n.NetNS(), n.NetNS())
	}
	fmt.Printf("\nThe cluster runs in the background; logs are in %s/logs.\n\n  export KUBECONFIG=%s\n\nStop it with: localcluster down --dir %s\n",
		c.Dir(), c.Kubeconfig(), c.Dir())
	return nil
}

func down(args []string) error {
	dir, _, rest, err := flags("down", localcluster.DefaultDir(), args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("down takes no arguments, got %q", rest)
	}
	err = localcluster.Down(dir, os.Stderr)
	if errors.Is(err, localcluster.ErrNotRunning) {
		fmt.Fprintf(os.Stderr, "localcluster: no cluster in %s; nothing to stop\n", dir)
		return nil
	}
	if err == nil {
		fmt.Fprintf(os.Stderr, "localcluster: stopped the cluster in %s\n", dir)
	}
	return err
}

// run returns CMD's exit status, or an error if the cluster could not be started or stopped.
func run(args []string) (code int, err error) {
	dir, nodes, realNode, rest, err := flagsNode("run", "", args)
	if err != nil {
		return 0, err
	}
	if len(rest) == 0 {
		return 0, errors.New("run needs a command (localcluster run -- CMD ARGS)")
	}

	// Ctrl-C reaches CMD directly (same process group); we only make sure that the cluster
	// is stopped afterwards instead of dying with it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var received atomic.Value // the signal that stopped us, if any
	go func() {
		if sig, ok := <-sigs; ok {
			received.Store(sig)
			cancel()
		}
	}()

	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Nodes: nodes, RealNode: realNode})
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := c.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	cmd := exec.Command(rest[0], rest[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig())
	if n := c.Node(); n != nil {
		cmd.Env = append(cmd.Env, "LOCALCLUSTER_NETNS="+n.NetNS(), "LOCALCLUSTER_NODE="+n.Name())
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	// A SIGTERM sent to us alone (not to the process group) is passed on to CMD.
	go func() {
		<-ctx.Done()
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if exit.ExitCode() < 0 { // killed by a signal
			// Stopped by Ctrl-C or SIGTERM as the user asked: exit as a shell would.
			if sig, ok := received.Load().(syscall.Signal); ok {
				return 128 + int(sig), nil
			}
			return 1, nil
		}
		return exit.ExitCode(), nil
	}
	return 0, err
}
