package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout is how long a component gets between SIGTERM and SIGKILL.
const stopTimeout = 10 * time.Second

// process is one running component. Each runs as the leader of its own process group so
// that signals reach anything it forks, and its output goes straight to a file so that it
// can outlive us (detached mode) without a pipe to drain.
type process struct {
	name    string
	path    string
	args    []string
	logPath string
	// env is added to the environment the process inherits.
	env []string
	// netns, if set, is the network namespace (a path) the process runs in.
	netns string

	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error
}

// spawnRequests is served by one goroutine locked to its OS thread for the life of the
// program. Pdeathsig fires when the *thread* that forked the child exits, not the process;
// forking from a thread that never exits makes it mean "when this program dies".
var spawnRequests = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
})

func (p *process) start(detach bool) error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own copy
	fmt.Fprintf(logFile, "\n==== %s %s %s\n", time.Now().Format(time.RFC3339), p.path, strings.Join(p.args, " "))

	path, args := p.path, p.args
	if p.netns != "" {
		path, args = (&netns{}).wrapPath(p.netns, path, args)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	if detach {
		// A new session: no controlling terminal, so Ctrl-C in the shell that ran `up` does not reach it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = attachedProcAttr()
	}
	errc := make(chan error, 1)
	spawnRequests() <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.started, p.done = cmd, time.Now(), make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	if p.done == nil {
		return true, errors.New("not started")
	}
	select {
	case <-p.done:
		if p.waitErr == nil {
			return true, errors.New("exited")
		}
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if it has not exited in time.
func (p *process) stop(timeout time.Duration) error {
	if p.done == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed it", p.name, timeout)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, pgid)
	}
}

// tail returns the last n lines of the process's log, for error messages.
func (p *process) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	const maxBytes = 64 << 10
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procStartTime returns the start time of pid in clock ticks since boot, which together with
// the pid identifies a process across pid reuse; ok is false if pid is gone or a zombie.
func procStartTime(pid int) (ticks uint64, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name in parentheses may contain spaces; fields are counted after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is the state (field 3 of stat), fields[19] the start time (field 22).
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return 0, false
	}
	ticks, err = strconv.ParseUint(fields[19], 10, 64)
	return ticks, err == nil
}
