package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100 on Linux).
const clockTicks = 100

// cpuSeconds returns the CPU time (user + system) each process has used so far: the control
// plane's components (from the cluster's state file), the controller and the benchmark itself.
func (b *bench) cpuSeconds() map[string]float64 {
	pids := map[string]int{"bench": os.Getpid()}
	if b.ctrl != nil {
		pids["controller"] = b.ctrl.Pid()
	}
	if b.cluster != nil {
		var st struct {
			Processes []struct {
				Name string `json:"name"`
				PID  int    `json:"pid"`
			} `json:"processes"`
		}
		if data, err := os.ReadFile(filepath.Join(b.cluster.Dir(), "state.json")); err == nil && json.Unmarshal(data, &st) == nil {
			for _, p := range st.Processes {
				pids[p.Name] = p.PID
			}
		}
	}
	out := map[string]float64{}
	for name, pid := range pids {
		if s, ok := procCPU(pid); ok {
			out[name] = s
		}
	}
	if busy, ok := machineBusy(); ok {
		out["machine"] = busy
	}
	return out
}

// machineBusy returns the CPU seconds all processes on the machine have used (every core's
// non-idle time), from /proc/stat.
func machineBusy() (float64, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	var busy float64
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		busy += n
	}
	return busy / clockTicks, true
}

func procCPU(pid int) (float64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name is in parentheses and may hold spaces; fields start after it.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (utime + stime) / clockTicks, true
}

// cpuDelta is after-before, rounded, with the sum of the processes under "total" ("machine"
// is every process on the machine, ours and others').
func cpuDelta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	total := 0.0
	for k, v := range after {
		if b, ok := before[k]; ok {
			d := v - b
			out[k] = round2(d)
			if k != "machine" {
				total += d
			}
		}
	}
	out["total"] = round2(total)
	return out
}

// peakRSSMiB returns a process's peak resident set size (VmHWM) in MiB.
func peakRSSMiB(pid int) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return round2(kb / 1024)
			}
		}
	}
	return 0
}
