package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNotRunning is returned by Down when the directory holds no cluster.
var ErrNotRunning = errors.New("no cluster state found")

// state is what a cluster records in its directory so that another process (Down, or a Start
// that must refuse) can find its components.
type state struct {
	Server     string         `json:"server"`
	Kubeconfig string         `json:"kubeconfig"`
	Processes  []stateProcess `json:"processes"`
}

type stateProcess struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// StartTicks tells the recorded process apart from a later one that reuses its pid.
	StartTicks uint64 `json:"startTicks"`
	Log        string `json:"log"`
}

func (p stateProcess) alive() bool {
	ticks, ok := procStartTime(p.PID)
	return ok && ticks == p.StartTicks
}

func (s *state) running() []string {
	var names []string
	for _, p := range s.Processes {
		if p.alive() {
			names = append(names, fmt.Sprintf("%s pid %d", p.Name, p.PID))
		}
	}
	return names
}

func (c *Cluster) saveStateLocked() error {
	st := state{Server: c.server, Kubeconfig: c.kubeconfig}
	for _, p := range c.procs {
		pid := p.cmd.Process.Pid
		ticks, _ := procStartTime(pid)
		st.Processes = append(st.Processes, stateProcess{Name: p.name, PID: pid, StartTicks: ticks, Log: p.logPath})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.path(stateFile + ".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path(stateFile))
}

func readState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

// Running reports whether a cluster started in dir (e.g. detached) still has live components,
// and returns its admin kubeconfig.
func Running(dir string) (kubeconfig string, ok bool) {
	st, err := readState(dir)
	if err != nil || len(st.running()) == 0 {
		return "", false
	}
	return st.Kubeconfig, true
}

// Down stops a cluster that another process started in dir, typically with Options.Detach,
// and removes everything it created there except its logs.
func Down(dir string, log io.Writer) error {
	if log == nil {
		log = os.Stderr
	}
	st, err := readState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", dir, ErrNotRunning)
	}
	if err != nil {
		return err
	}
	names := make([]string, len(st.Processes))
	for i, p := range st.Processes {
		names[i] = p.Name
	}
	err = stopOrdered(names, func(i int) error {
		p := st.Processes[i]
		if !p.alive() {
			return nil
		}
		fmt.Fprintf(log, "localcluster: stopping %s (pid %d)\n", p.Name, p.PID)
		return stopPID(p, stopTimeout)
	})
	// A real node's shims and containers are not among the recorded processes; sweepNode
	// kills them, and must unmount before any file is removed.
	if nodeErr := sweepNode(dir); nodeErr != nil {
		return errors.Join(err, nodeErr)
	}
	return errors.Join(err, removeOwned(dir))
}

// stopPID is process.stop for a process we did not start and so cannot wait for.
func stopPID(p stateProcess, timeout time.Duration) error {
	_ = syscall.Kill(-p.PID, syscall.SIGTERM)
	if waitGone(p, timeout) {
		return nil
	}
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	if waitGone(p, 5*time.Second) {
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed it", p.Name, timeout)
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
}

func waitGone(p stateProcess, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for p.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func removeOwned(dir string) error {
	var errs []error
	for _, name := range owned {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
	}
	return errors.Join(errs...)
}

// Temporary directories record their owner so that a later Start can remove those whose
// owner died without cleaning up (a test binary killed by -timeout or SIGKILL), and are
// marked when kept on purpose so that their logs survive.
const (
	ownerFile = "owner.json"
	keptFile  = "KEPT"
)

func writeOwner(dir string) error {
	pid := os.Getpid()
	ticks, _ := procStartTime(pid)
	data, err := json.Marshal(stateProcess{Name: "owner", PID: pid, StartTicks: ticks})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), data, 0o644)
}

func markKept(dir string) error {
	return os.WriteFile(filepath.Join(dir, keptFile), []byte("kept for its logs; remove at will\n"), 0o644)
}

func sweepTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, keptFile)); err == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		var owner stateProcess
		if json.Unmarshal(data, &owner) != nil || owner.alive() {
			continue
		}
		// A real node's containers, mounts, cgroups and namespace outlive a killed owner.
		// Never remove files through a mount that is still there.
		if sweepNode(dir) != nil {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}
