#!/usr/bin/env bash
# The one layering rule (docs/ARCHITECTURE.md): a file includes headers only from
# its own folder and the folders below it. Scans every .c/.h of the layered
# folders under ROOT (default: the repository) and prints each include that
# points up or sideways as "file:line: folder/ includes X (allowed: ...)";
# exits 1 when there is one, 0 when there is none. tests/, bench/ and tools/
# may include anything.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
# folder -> the folders its files may include from (itself included)
allowed() {
  case $1 in
    common)   echo "common" ;;
    autograd) echo "common autograd" ;;
    layers)   echo "common autograd layers" ;;
    data)     echo "common data" ;;
    eval)     echo "common autograd layers data eval" ;;
    train)    echo "common autograd layers data eval train" ;;
    cli)      echo "common autograd layers data eval train cli" ;;
  esac
}
bad=0
for dir in common autograd layers data eval train cli; do
  [ -d "$root/$dir" ] || continue
  ok=$(allowed "$dir")
  for f in "$root/$dir"/*.c "$root/$dir"/*.h; do
    [ -f "$f" ] || continue
    # #include "folder/name.h" (a bare "name.h" is the file's own folder)
    while IFS=: read -r line inc; do
      top=${inc%%/*}
      [ "$top" = "$inc" ] && continue
      case " $ok " in *" $top "*) continue ;; esac
      echo "${f#"$root"/}:$line: $dir/ includes $inc (allowed: $ok)"
      bad=1
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
             sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/')
  done
done
exit $bad
