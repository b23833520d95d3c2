package postproc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	hook := writeHook(t, bin, "send_ipprot", "exit 0\n")
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("exit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "not_exec"), []byte("exit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	t.Setenv("PATH", bin)
	t.Chdir(dir)

	cases := []struct {
		command string
		want    string // the error; "" for nil
	}{
		{hook, ""},
		{hook + " --to archive", ""},
		{"  " + hook + "\targ", ""},
		{hook + ";true", ""},
		{hook + ">>/tmp/log", ""},
		{missing, `"` + missing + `": no such file`},
		{missing + " arg", `"` + missing + `": no such file`},
		{missing + ";true", `"` + missing + `": no such file`},
		{missing + "|cat", `"` + missing + `": no such file`},
		{plain, `"` + plain + `": not executable`},
		{bin, `"` + bin + `": is a directory`},
		{"/dev/null", `"/dev/null": not a regular file`},
		{"./plain", `"./plain": not executable`},
		{"bin/send_ipprot", ""},
		{"./missing", `"./missing": no such file`},
		{"send_ipprot", ""},
		{"send_ipprot arg", ""},
		{"no_such_tool", `"no_such_tool": not found in PATH`},
		{"not_exec", `"not_exec": not found in PATH`},
		// Builtins and keywords are not programs.
		{"exit 0", ""},
		{"echo hi", ""},
		{"cd /; x", ""},
		{". /etc/profile; send", ""},
		{"send ;", `post-processing command ends with ";": its parameters would run as a command`},
		{"send &", `post-processing command ends with "&": its parameters would run as a command`},
		{"send |\n", `post-processing command ends with "|": its parameters would run as a command`},
		{"[ -x /x ] && /x", ""},
		{"if true; then /missing; fi", ""},
		{"exec /missing", ""},
		{"{ /missing; }", ""},
		{"! /missing", ""},
		// Shell syntax: only the shell can tell.
		{"'" + missing + "'", ""},
		{`"` + missing + `"`, ""},
		{"$HOME/missing", ""},
		{"~/missing", ""},
		{"FOO=bar " + missing, ""},
		{"(" + missing + ")", ""},
		{"`echo " + missing + "`", ""},
		{`\` + missing, ""},
		{"/tmp/*/missing", ""},
		{"# comment", ""},
		// Nothing to run.
		{"", "post-processing command is empty"},
		{" \t\n", "post-processing command is empty"},
	}
	for _, c := range cases {
		t.Run(c.command, func(t *testing.T) {
			err := Check(c.command)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != c.want {
				t.Errorf("Check(%q) = %q; want %q", c.command, got, c.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty command", Config{Command: "  "}, "post-processing command is empty"},
		{"negative jobs", Config{Command: "true", Jobs: -1}, "post-processing jobs -1: must not be negative"},
		{"negative queue", Config{Command: "true", Queue: -2}, "post-processing queue -2: must not be negative"},
		{"negative timeout", Config{Command: "true", Timeout: -1}, "post-processing timeout -1ns: must not be negative"},
		{"negative grace", Config{Command: "true", Grace: -1}, "post-processing grace -1ns: must not be negative"},
		{"missing shell", Config{Command: "true", Shell: dir + "/sh"}, `shell: "` + dir + `/sh": no such file`},
		{"ends in ;", Config{Command: "send ; "}, `post-processing command ends with ";": its parameters would run as a command`},
		{"ends in &", Config{Command: "send &\n"}, `post-processing command ends with "&": its parameters would run as a command`},
		{"ends in |", Config{Command: "send |"}, `post-processing command ends with "|": its parameters would run as a command`},
		{"shell not in PATH", Config{Command: "true", Shell: "no-such-shell"}, `shell: "no-such-shell": not found in PATH`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := New(c.cfg)
			if err == nil || err.Error() != c.want {
				t.Errorf("New: got %v, %v; want error %q", r, err, c.want)
			}
		})
	}
}

func FuzzFirstWord(f *testing.F) {
	for _, s := range []string{
		"/x/send", "  send arg", "send;x", "'a b' c", "FOO=1 x", "$(x)", "\tif true; then x; fi",
		"a\\ b", "~/x", "(x)", "x|y", "", "\n", "é/ü -x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, command string) {
		word, plain := firstWord(command)
		if !plain {
			return
		}
		if word == "" {
			t.Fatalf("firstWord(%q) = %q, plain; want a word", command, word)
		}
		if strings.ContainsAny(word, " \t\n;&|<>()'\"\\$`*?[]{}~=#!%") {
			t.Fatalf("firstWord(%q) = %q, plain; want no shell syntax in it", command, word)
		}
		if !strings.HasPrefix(strings.TrimLeft(command, " \t\n"), word) {
			t.Fatalf("firstWord(%q) = %q; want the start of the command", command, word)
		}
	})
}

// TestAbsCommand: a plain relative first word becomes absolute (a daemon
// changes to /); anything else is left alone.
func TestAbsCommand(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for in, want := range map[string]string{
		"./send -x":           dir + "/send -x",
		"tools/send":          dir + "/tools/send",
		"  bin/send  ":        "  " + dir + "/bin/send  ",
		"/usr/bin/send":       "/usr/bin/send",
		"send":                "send",
		`"./my send" a`:       `"./my send" a`,
		"FOO=1 ./send":        "FOO=1 ./send",
		"./send; echo ./send": dir + "/send; echo ./send",
	} {
		if got := AbsCommand(in); got != want {
			t.Errorf("AbsCommand(%q) = %q; want %q", in, got, want)
		}
	}
}
