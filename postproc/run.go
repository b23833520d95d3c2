package postproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// execute runs j's command to its end and logs how it ended.
func (r *Runner) execute(j *run) {
	ctx, cancel := r.runContext()
	defer cancel()

	if context.Cause(ctx) == errShutdown {
		// Taken from the queue just as Shutdown gave up.
		r.logNotRun(j, "shutdown deadline passed")
		return
	}
	cmd, out, err := r.startCmd(ctx, j)
	if err != nil {
		r.logNotRun(j, "cannot start: "+err.Error())
		return
	}
	start := r.now()
	r.log.Debug("post-cmd started", "conn", j.conn, "pid", cmd.Process.Pid)
	awaitExit(cmd.Process.Pid)
	// The leader has exited but is not reaped yet, so its pid, the group's
	// id, cannot have been reused: whatever is left in the group goes too.
	_ = signalGroup(cmd.Process.Pid, syscall.SIGKILL)
	err = cmd.Wait()
	out.flush()
	r.logExit(j, cmd.ProcessState, err, context.Cause(ctx), r.now().Sub(start))
}

// command returns the command of j, in a process group of its own, its
// output going to out.
func (r *Runner) command(ctx context.Context, j *run, out *output) *exec.Cmd {
	args := append([]string{"-c", r.script, "ipprotd"}, j.params...)
	cmd := exec.CommandContext(ctx, r.shell, args...)
	cmd.Env = append(r.env[:len(r.env):len(r.env)], j.env...)
	cmd.Stdout = out.stream("stdout", slog.LevelInfo)
	cmd.Stderr = out.stream("stderr", slog.LevelWarn)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGTERM) }
	// After Grace, exec kills the group's leader and closes the output
	// pipes should a process outside the group still hold them.
	cmd.WaitDelay = r.grace
	return cmd
}

// startCmd starts j's command. A start that fails for want of
// descriptors, processes or memory (EMFILE, ENFILE, EAGAIN, ENOMEM: the
// daemon is under load) is tried again with a back-off of up to
// r.startRetry, as the accept loop does, until it starts or ctx ends (the
// run's timeout, or a stop that gave up); other failures are final.
func (r *Runner) startCmd(ctx context.Context, j *run) (*exec.Cmd, *output, error) {
	var wait time.Duration
	for {
		out := newOutput(r.log, j.conn)
		cmd := r.command(ctx, j, out)
		err := r.start(cmd)
		if err == nil || !temporary(err) {
			return cmd, out, err
		}
		if wait == 0 {
			r.log.Warn("post-cmd cannot start yet, retrying", "conn", j.conn, "err", err)
		}
		wait = min(max(2*wait, 10*time.Millisecond), r.startRetry)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w; gave up: %v", err, context.Cause(ctx))
		}
	}
}

// temporary reports whether a start failed for want of a resource that
// comes back: descriptors, processes, memory.
func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM)
}

// runContext returns the context of one run: cancelled with errShutdown
// when Shutdown gives up, and with errTimeout after r.timeout.
func (r *Runner) runContext() (context.Context, context.CancelFunc) {
	if r.timeout > 0 {
		return context.WithTimeoutCause(r.abortCtx, r.timeout, errTimeout)
	}
	return context.WithCancel(r.abortCtx)
}

// signalGroup sends sig to the process group pgid.
func signalGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	return nil
}

// awaitExit returns once the child pid has exited, leaving it to be reaped
// by exec.Cmd.Wait.
func awaitExit(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// logExit writes the line about an ended command: info when it exited 0
// on its own, warn otherwise, with the file when it failed.
func (r *Runner) logExit(j *run, state *os.ProcessState, err, cause error, d time.Duration) {
	attrs := []any{"conn", j.conn, "status", state.ExitCode()}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		attrs = append(attrs, "signal", ws.Signal().String())
	}
	if cause != nil {
		attrs = append(attrs, "reason", cause.Error())
	}
	attrs = append(attrs, "duration", d.Round(time.Millisecond).String())
	level := slog.LevelInfo
	if state.Success() && err == nil {
		r.counts.ok.Add(1)
	} else {
		r.counts.failed.Add(1)
		level = slog.LevelWarn
		attrs = append(attrs, "file", j.file)
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) && cause == nil {
			attrs = append(attrs, "err", err.Error())
		}
	}
	r.log.Log(context.Background(), level, "post-cmd exited", attrs...)
}
