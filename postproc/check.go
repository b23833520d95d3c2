package postproc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Check is the start-up check of a post-processing command. When the first
// word of command is a plain word, neither shell syntax nor a shell builtin
// or keyword, it must name a program that can run: a path must exist and be
// an executable regular file, a name must be found in PATH. Otherwise Check
// returns nil, as only the shell can tell. The error names the word, as in
// `"/x/send": no such file`. An empty command is an error, and so is one
// that ends in ;, & or |, after which the parameters would run as a
// command of their own.
func Check(command string) error {
	if err := checkEnd(command); err != nil {
		return err
	}
	word, plain := firstWord(command)
	if !plain || shellWords[word] {
		return nil
	}
	return checkWord(word)
}

// AbsCommand returns command with its first word made absolute where it is
// a plain relative path (./send_ipprot, tools/send): a daemon changes to
// /, and the command must still name the program it named at start. Any
// other command is returned as it is.
func AbsCommand(command string) string {
	word, plain := firstWord(command)
	if !plain || !strings.Contains(word, "/") || filepath.IsAbs(word) {
		return command
	}
	abs, err := filepath.Abs(word)
	if err != nil {
		return command
	}
	i := strings.Index(command, word)
	return command[:i] + abs + command[i+len(word):]
}

// checkEnd refuses an empty command and one whose end would make "$@" a
// command of its own.
func checkEnd(command string) error {
	command = strings.TrimRight(command, " \t\n")
	if command == "" {
		return errors.New("post-processing command is empty")
	}
	if end := command[len(command)-1:]; strings.Contains(";&|", end) {
		return fmt.Errorf("post-processing command ends with %q: its parameters would run as a command", end)
	}
	return nil
}

// checkWord checks that word names a program that can run.
func checkWord(word string) error {
	if !strings.Contains(word, "/") {
		if _, err := exec.LookPath(word); err != nil && !errors.Is(err, exec.ErrDot) {
			return fmt.Errorf("%q: not found in PATH", word)
		}
		return nil
	}
	fi, err := os.Stat(word)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%q: no such file", word)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%q: %w", word, err)
	case fi.IsDir():
		return fmt.Errorf("%q: is a directory", word)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%q: not a regular file", word)
	}
	if err := unix.Faccessat(unix.AT_FDCWD, word, unix.X_OK, unix.AT_EACCESS); err != nil {
		return fmt.Errorf("%q: not executable", word)
	}
	return nil
}

// firstWord returns the first word of a shell command and whether it is
// plain: no quoting, expansion, pattern, assignment or comment, so that it
// is the command's name as written.
func firstWord(command string) (word string, plain bool) {
	s := strings.TrimLeft(command, " \t\n")
	if end := strings.IndexAny(s, " \t\n;&|<>()"); end >= 0 {
		s = s[:end]
	}
	if s == "" || strings.ContainsAny(s, "'\"\\$`*?[]{}~=#!%") {
		return s, false
	}
	return s, true
}

// shellWords are the keywords and builtins of sh, dash and bash, which are
// not looked up as programs.
var shellWords = wordSet(`
	! { } [[ ]] case do done elif else esac fi for function if in select
	then time until while coproc
	. : [ alias bg bind break builtin caller cd chdir command compgen
	complete compopt continue declare dirs disown echo enable eval exec
	exit export false fc fg getopts hash help history jobs kill let local
	logout mapfile popd printf pushd pwd read readarray readonly return
	set shift shopt source suspend test times trap true type typeset
	ulimit umask unalias unset wait`)

func wordSet(words string) map[string]bool {
	set := make(map[string]bool)
	for _, w := range strings.Fields(words) {
		set[w] = true
	}
	return set
}
