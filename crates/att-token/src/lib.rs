//! att-token, the command-line client of att-tokend: its command-line definitions, in a library so that
//! packaging can generate the man pages and completions from them. The program itself is `src/main.rs`.

pub mod cli;
