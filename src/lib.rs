pub mod ltx;
