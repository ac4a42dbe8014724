//! What the fuzz targets in `fuzz_targets/` share: the check every streaming parser
//! must pass, and a way to cut one fuzz input into several fields.

use std::fmt::Debug;

/// Feeds `input` to a fresh streaming parser twice, whole and one byte at a time, and
/// asserts that both give the same items up to and including the first error (a parser
/// must not depend on how the socket cut the stream). `next` takes the next item,
/// `Ok(None)` meaning more bytes are needed.
pub fn assert_split_equals_whole<P, T, E>(
    input: &[u8],
    new: impl Fn() -> P,
    push: impl Fn(&mut P, &[u8]),
    next: impl Fn(&mut P) -> Result<Option<T>, E>,
) where
    T: PartialEq + Debug,
    E: PartialEq + Debug,
{
    let drain = |parser: &mut P, out: &mut Vec<Result<T, E>>| loop {
        match next(parser) {
            Ok(Some(item)) => out.push(Ok(item)),
            Ok(None) => return true,
            Err(e) => {
                out.push(Err(e));
                return false;
            }
        }
    };
    let mut whole = new();
    let mut expected = Vec::new();
    push(&mut whole, input);
    drain(&mut whole, &mut expected);

    let mut split = new();
    let mut actual = Vec::new();
    for byte in input {
        push(&mut split, std::slice::from_ref(byte));
        if !drain(&mut split, &mut actual) {
            break;
        }
    }
    assert_eq!(expected, actual, "fed whole vs one byte at a time");
}

/// Cuts `input` at each `0xff` byte (which never occurs in UTF-8) into at most `n`
/// fields; the last field takes the rest, missing fields are empty.
pub fn fields(input: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = input.splitn(n, |&b| b == 0xff).collect();
    out.resize(n, &[]);
    out
}
