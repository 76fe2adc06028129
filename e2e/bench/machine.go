package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machine is what a reader needs to compare figures across machines.
type machine struct {
	NumCPU    int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
	MemTotal  string `json:"mem_total,omitempty"`
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages when the run
	// started: other work on the machine shares the cores with the bench.
	LoadAvg string `json:"load_avg,omitempty"`
}

func readMachine() machine {
	return machine{
		// NumCPU honours the affinity mask, as nproc does.
		NumCPU:    runtime.NumCPU(),
		CPUModel:  procField("/proc/cpuinfo", "model name"),
		GoVersion: runtime.Version(), // the toolchain that built the servers too, as go run and go build share it
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		Kernel:    readTrim("/proc/sys/kernel/osrelease"),
		MemTotal:  memTotal(),
		LoadAvg:   loadAvg(),
	}
}

// procField is the value of the first "key: value" line of a /proc file
// whose key is key; empty when the file or line is missing.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// memTotal is /proc/meminfo's MemTotal ("24684084 kB") in GiB.
func memTotal() string {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal"))
	if len(f) != 2 || f[1] != "kB" {
		return ""
	}
	kb, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%.0f GiB", kb/(1<<20))
}
